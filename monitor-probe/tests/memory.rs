//! Memory pressure (100 - MemAvailable/MemTotal) and reclaim stalls timed in the kernel.
use crate::util::*;
use monitor_probe::event::{EventKind::*, Metric};
use monitor_probe::procfs::MemInfo;
use std::time::Duration;

#[test]
fn memory_pressure_is_100_minus_available_over_total() {
    require_root();
    let expect = MemInfo::read().unwrap().pressure_pct();
    let mut p = spawn(&["--memory-threshold", "0.5", "--interval", "0.2", "--count", "1"], &[]);
    let t = p.expect(Duration::from_secs(10), "memory trigger", is(Trigger, Metric::MemoryPressure));
    assert_eq!(t.unit, "%");
    assert_eq!(t.threshold, Some(0.5));
    assert!((t.value - expect).abs() < 5.0, "memory_pressure {} vs {expect} from /proc/meminfo", t.value);
    assert!(p.finish(Duration::from_secs(5)).success());
}

/// A memory cgroup smaller than a file read inside it forces the kernel to reclaim on the
/// reader's behalf: the reclaim program must time it and report a stall.
#[test]
fn memcg_reclaim_is_timed_in_the_kernel() {
    require_root();
    let cg = std::path::Path::new("/sys/fs/cgroup/memory");
    if !cg.join("memory.limit_in_bytes").exists() {
        // cgroup v2 only: memory.max
        assert!(std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists(), "no memory cgroup");
    }
    let _g = CACHE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (group, limit_file, procs) = if cg.join("memory.limit_in_bytes").exists() {
        (cg.join(format!("mp-test-{}", std::process::id())), "memory.limit_in_bytes", "cgroup.procs")
    } else {
        (std::path::Path::new("/sys/fs/cgroup").join(format!("mp-test-{}", std::process::id())), "memory.max", "cgroup.procs")
    };
    std::fs::create_dir(&group).unwrap();
    let g2 = group.clone();
    scopeguard::defer! { let _ = std::fs::remove_dir(&g2); }
    std::fs::write(group.join(limit_file), "33554432").unwrap(); // 32 MiB

    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let file = dir.path().join("f.bin");
    std::fs::write(&file, vec![7u8; 128 << 20]).unwrap();
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "1").unwrap();

    let mut p = spawn(
        &["--stall-threshold-ms", "0.001", "--interval", "0.2", "--cooldown", "0", "--psi-stall-ms", "1", "--duration", "20"],
        &[],
    );
    p.expect(Duration::from_secs(10), "first sample", is(Sample, Metric::PageCache));
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("echo $$ > {}/{procs} && cat {} > /dev/null", group.display(), file.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let t = p.expect(Duration::from_secs(5), "reclaim_stall trigger", is(Trigger, Metric::ReclaimStall));
    assert_eq!(t.detail["kind"], "memcg", "{t:?}");
    assert!(t.value > 0.0 && t.unit == "ms");
    assert!(t.kernel_ns.is_some());
    p.expect(Duration::from_secs(5), "reclaim_stall sample", is(Sample, Metric::ReclaimStall));
    // The stall also shows in PSI: the trigger (1 ms in 2 s) wakes monitor-probe.
    let psi = p.expect(Duration::from_secs(4), "PSI wake-up", |e| e.source == Some(monitor_probe::event::Source::Psi));
    assert_eq!(psi.metric, Metric::MemoryPressure);
    assert!(psi.detail["psi_some_avg10"].is_number(), "{psi:?}");
}

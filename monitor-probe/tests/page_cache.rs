//! Page cache: the in-kernel count follows a 512 MiB read and the trigger fires on the crossing.
use crate::util::*;
use monitor_probe::clock::monotonic_ns;
use monitor_probe::event::{EventKind::*, Metric::PageCache, Source};
use monitor_probe::procfs::MemInfo;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

const FILE_MB: u64 = 512;

fn drop_caches() {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "1").expect("write /proc/sys/vm/drop_caches");
}

/// A fresh file on a disk file system (not tmpfs: that is shmem), not in the page cache.
fn cold_file(mb: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let path = dir.path().join("cold.bin");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    for _ in 0..mb {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    drop_caches();
    (dir, path)
}

fn read_all(path: &std::path::Path) {
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf).unwrap() > 0 {}
}

#[test]
fn reading_512mib_raises_the_count_and_fires_the_trigger() {
    require_root();
    let _g = CACHE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let (_dir, path) = cold_file(FILE_MB);
    let ino = std::fs::metadata(&path).unwrap().ino();
    std::thread::sleep(Duration::from_secs(1)); // let the host refill what it needs after the drop
    let c0 = MemInfo::read().unwrap().cache_mb();
    // Crossing about 400 MB into the read leaves room for other processes' pages meanwhile.
    let threshold = (c0 + 400.0).round();
    let thr = threshold.to_string();
    let mut p = spawn(
        &["--cache-threshold", &thr, "--interval", "0.25", "--resync", "0", "--cooldown", "0", "--sample-top", "--top", "10", "--duration", "60"],
        &[],
    );
    let s0 = p.expect(Duration::from_secs(10), "first page_cache sample", is(Sample, PageCache));
    assert_eq!(s0.source, Some(Source::Ebpf));
    let m0 = MemInfo::read().unwrap().cache_mb();
    assert!((s0.value - m0).abs() < 64.0, "seeded count {} MB far from meminfo {m0} MB", s0.value);
    assert!(s0.value < threshold - 128.0, "the host filled {} MB of cache before the test could read", s0.value - c0);

    let t_read = monotonic_ns();
    read_all(&path);
    let t_done = monotonic_ns();

    // The trigger: value over the threshold, stamped by the kernel at the crossing.
    let trig = p.expect(Duration::from_secs(10), "page_cache trigger", is(Trigger, PageCache));
    assert!(trig.value >= threshold, "{trig:?}");
    assert_eq!(trig.threshold, Some(threshold));
    let k = trig.kernel_ns.expect("kernel timestamp");
    assert!(k >= t_read && k <= t_done, "crossing at {k} outside the read [{t_read}, {t_done}]");
    let latency_ms = (trig.mono_ns - k) as f64 / 1e6;
    eprintln!("page_cache trigger latency (kernel crossing -> userspace event): {latency_ms:.3} ms");
    assert!(latency_ms < 200.0, "trigger delivered {latency_ms} ms after the crossing");
    // The trigger names the files that filled the cache: ours is among them.
    let top = trig.detail["top"].as_array().unwrap();
    assert!(top.iter().any(|f| f["ino"] == ino), "our inode {ino} not in {top:?}");

    // After the read: the count rose by about the file's size (other processes on the host
    // add their own pages, so the rise is compared with what /proc/meminfo saw in the same
    // window too), and our file alone holds ~512 MiB of it.
    let after = p.expect(Duration::from_secs(5), "sample after the read", |e| {
        e.event == Sample && e.metric == PageCache && e.mono_ns > t_done + 300_000_000
    });
    let m1 = MemInfo::read().unwrap().cache_mb();
    let rise = after.value - s0.value;
    let meminfo_rise = m1 - m0;
    eprintln!("page_cache count rise after reading {FILE_MB} MiB: {rise:.1} MB (meminfo Cached-Shmem rose {meminfo_rise:.1} MB)");
    assert!(rise >= FILE_MB as f64 * 0.95, "count rose only {rise} MB");
    assert!((rise - meminfo_rise).abs() < 48.0, "kernel count rose {rise} MB, meminfo {meminfo_rise} MB");
    let ours = after.detail["top"].as_array().unwrap().iter().find(|f| f["ino"] == ino).expect("our file in top");
    let mb = ours["mb"].as_f64().unwrap();
    eprintln!("page_cache count for the test file: {mb:.1} MB of {FILE_MB} MiB");
    assert!((mb - FILE_MB as f64).abs() <= FILE_MB as f64 * 0.05, "our file counted {mb} MB of {FILE_MB}");

    // Dropping the cache brings it below the clear level.
    drop_caches();
    let clear = p.expect(Duration::from_secs(10), "page_cache clear", is(Clear, PageCache));
    assert!(clear.value < threshold);
}

#[test]
fn resync_reports_drift() {
    require_root();
    let _g = CACHE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut p = spawn(&["--interval", "0.5", "--resync", "1", "--duration", "2.6"], &[]);
    assert!(p.finish(Duration::from_secs(15)).success());
    let drifts: Vec<_> = p.seen.iter().filter(|e| e.metric == monitor_probe::event::Metric::PageCacheDrift).collect();
    assert_eq!(drifts.len(), 2, "{drifts:#?}");
    for d in drifts {
        assert!(d.value.abs() < 64.0, "drift {} MB in 1 s", d.value);
        assert!(d.detail["kernel_mb"].as_f64().is_some() && d.detail["meminfo_mb"].as_f64().is_some());
    }
}

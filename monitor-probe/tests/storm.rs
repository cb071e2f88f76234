//! monitor-probe under storm (issue 10, part 4), as root: page-cache churn through the
//! threshold (a file read and dropped again and again, the threshold halfway up its size, no
//! hysteresis) while a fake temperature sensor flaps across its threshold as fast as it can be
//! rewritten. monitor-probe must keep its memory bounded, report lost ring-buffer records
//! (never lose them silently), and emit at most one trigger per metric per cooldown.
//!
//! `STORM_CHURN_MB` (default 2048; scripts/reliability.sh: 10240) bytes of page cache added and
//! dropped, `STORM_SECS` (default 15) at most, `STORM_FILE_MB` (default 256) churn file size,
//! `STORM_RSS_MB` (default 64) the memory bound. Prints `RELIABILITY storm ...`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn meminfo_mb(key: &str) -> f64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn drop_file(f: &std::fs::File) {
    // SAFETY: a valid open fd; POSIX_FADV_DONTNEED only drops clean cached pages of this file.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

fn write_temp(dir: &Path, milli_c: u32) {
    // Write then rename: the monitor never reads a half-written value.
    let tmp = dir.join("temp.tmp");
    std::fs::write(&tmp, format!("{milli_c}\n")).unwrap();
    std::fs::rename(&tmp, dir.join("temp")).unwrap();
}

#[test]
fn storm_keeps_memory_bounded_and_triggers_within_cooldown() {
    let churn_mb = env_u64("STORM_CHURN_MB", 2048);
    let secs = env_u64("STORM_SECS", 15);
    let file_mb = env_u64("STORM_FILE_MB", 256);
    let rss_limit_mb = env_u64("STORM_RSS_MB", 64);
    let cooldown = 2u64;

    // The churn file lives on disk (tmpfs pages are not counted), under the target dir. It is
    // sparse: reading its holes fills the page cache at memory speed, with no disk I/O.
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let file = work.path().join("churn");
    std::fs::File::create(&file).unwrap().set_len(file_mb << 20).unwrap();
    // The fake sensor tree on tmpfs, so it can be rewritten thousands of times a second.
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let zone = shm.path().join("sys/class/thermal/thermal_zone0");
    std::fs::create_dir_all(&zone).unwrap();
    std::fs::write(zone.join("type"), "x86_pkg_temp\n").unwrap();
    write_temp(&zone, 79000);

    let base = meminfo_mb("Cached") - meminfo_mb("Shmem");
    let threshold = (base + file_mb as f64 / 2.0).round();
    let mut child = Command::new(env!("CARGO_BIN_EXE_monitor-probe"))
        .args(["--json", "--host", "storm", "--hysteresis", "0", "--cooldown", &cooldown.to_string()])
        .args(["--interval", "0.05", "--resync", "0", "--temp-threshold", "80"])
        .args(["--cache-threshold", &threshold.to_string(), "--duration", &(secs + 2).to_string()])
        .arg("--sysfs-root")
        .arg(shm.path().join("sys"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start monitor-probe");
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let events = std::thread::spawn(move || {
        let mut counts: HashMap<(String, String), u64> = HashMap::new();
        for line in BufReader::new(stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).expect("one JSON event a line");
            let k = (v["event"].as_str().unwrap_or("").to_string(), v["metric"].as_str().unwrap_or("").to_string());
            *counts.entry(k).or_default() += 1;
        }
        counts
    });
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    // Let it attach and print its first samples.
    std::thread::sleep(Duration::from_millis(1500));

    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicU64::new(0));
    let sensor = {
        let (stop, flips, zone) = (stop.clone(), flips.clone(), zone.clone());
        std::thread::spawn(move || {
            let mut hot = false;
            while !stop.load(Ordering::Relaxed) {
                hot = !hot;
                write_temp(&zone, if hot { 81000 } else { 79000 });
                flips.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let t0 = Instant::now();
    let (mut churned, mut passes, mut peak_rss) = (0u64, 0u64, 0u64);
    let f = std::fs::File::open(&file).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    while churned < churn_mb && t0.elapsed() < Duration::from_secs(secs) {
        for i in 0..file_mb {
            f.read_exact_at(&mut buf, i << 20).unwrap();
        }
        drop_file(&f);
        churned += file_mb;
        passes += 1;
        peak_rss = peak_rss.max(status_kb(pid, "VmRSS:"));
    }
    let churn_secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sensor.join().unwrap();
    peak_rss = peak_rss.max(status_kb(pid, "VmHWM:"));
    let status = child.wait().unwrap();
    let counts = events.join().unwrap();
    let err = errs.join().unwrap();
    let get = |e: &str, m: &str| counts.get(&(e.to_string(), m.to_string())).copied().unwrap_or(0);
    // Lost records are reported on stderr with their count (never silent).
    let dropped: u64 = err
        .lines()
        .find(|l| l.contains("dropped") && l.contains("ring-buffer records"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.parse().ok()))
        .unwrap_or(0);
    let run_secs = secs + 2;
    let allowed = 1 + run_secs.div_ceil(cooldown);
    let (pc_trig, t_trig) = (get("trigger", "page_cache"), get("trigger", "temperature"));
    println!(
        "RELIABILITY storm churn_mb={churned} passes={passes} churn_secs={churn_secs:.1} sensor_flips={} flips_per_s={:.0} \
         page_cache_triggers={pc_trig} page_cache_clears={} temperature_triggers={t_trig} allowed_per_metric={allowed} \
         peak_rss_kb={peak_rss} dropped={dropped}",
        flips.load(Ordering::Relaxed),
        flips.load(Ordering::Relaxed) as f64 / churn_secs,
        get("clear", "page_cache"),
    );
    assert!(status.success(), "monitor-probe failed: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(peak_rss > 0 && peak_rss < rss_limit_mb * 1024, "monitor-probe RSS {peak_rss} KiB exceeds {rss_limit_mb} MiB");
    assert!(pc_trig <= allowed, "{pc_trig} page_cache triggers in {run_secs} s with a {cooldown} s cooldown");
    assert!(t_trig <= allowed, "{t_trig} temperature triggers in {run_secs} s with a {cooldown} s cooldown");
    assert!(t_trig >= 1, "the flapping sensor never triggered: {counts:?}");
    if passes >= 2 {
        assert!(pc_trig >= 1, "page-cache churn across the threshold never triggered: {counts:?} {err}");
    }
    let _: PathBuf = file;
}

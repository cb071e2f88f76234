//! Test helpers: a running monitor-probe owned by a guard, its events on a channel.
#![allow(dead_code)]
use monitor_probe::event::{Event, EventKind, Metric};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_monitor-probe");

/// Tests that drop the page cache or fill it run one at a time.
pub static CACHE_LOCK: Mutex<()> = Mutex::new(());

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "monitor-probe integration tests load eBPF programs: run them as root"
    );
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/sysfs").join(name)
}

/// Copy a fixture tree into a temp dir so a test can change temperatures.
pub fn fixture_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("cp").arg("-a").arg(format!("{}/.", fixture(name).display())).arg(dir.path()).status().unwrap();
    assert!(st.success());
    dir
}

pub fn set_temp(file: &Path, celsius: f64) {
    // Write-then-rename so the reader never sees a half-written value.
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", (celsius * 1000.0).round() as i64)).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// A monitor-probe process (killed on drop) and its `--json` events.
pub struct Running {
    child: Child,
    events: Receiver<Event>,
    pub seen: Vec<Event>,
}

pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.arg("--json").args(args).stdout(Stdio::piped()).stderr(Stdio::inherit());
    for v in [
        "MIGRATION_CACHE_THRESHOLD_MB",
        "MIGRATION_TEMP_THRESHOLD_C",
        "MIGRATION_MEMORY_THRESHOLD_PCT",
        "MIGRATION_STALL_THRESHOLD_MS",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn monitor-probe");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let ev: Event = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    Running { child, events: rx, seen: Vec::new() }
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Next event matching `f` within `timeout` (all events seen are kept in `seen`).
    pub fn wait_for(&mut self, timeout: Duration, f: impl Fn(&Event) -> bool) -> Option<Event> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(ev) => {
                    self.seen.push(ev.clone());
                    if f(&ev) {
                        return Some(ev);
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    pub fn expect(&mut self, timeout: Duration, what: &str, f: impl Fn(&Event) -> bool) -> Event {
        self.wait_for(timeout, f).unwrap_or_else(|| panic!("no {what} within {timeout:?}; saw {:#?}", self.seen))
    }

    /// Wait for exit (bounded) and collect the rest of the events.
    pub fn finish(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                while let Ok(ev) = self.events.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(ev);
                }
                return st;
            }
            assert!(Instant::now() < end, "monitor-probe did not exit within {timeout:?}");
            while let Ok(ev) = self.events.try_recv() {
                self.seen.push(ev);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn count(&self, kind: EventKind, metric: Metric) -> usize {
        self.seen.iter().filter(|e| e.event == kind && e.metric == metric).count()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn is(kind: EventKind, metric: Metric) -> impl Fn(&Event) -> bool {
    move |e| e.event == kind && e.metric == metric
}

/// Run to completion, capture (exit code, stdout, stderr).
pub fn run_once(args: &[&str], envs: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

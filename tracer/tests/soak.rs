//! Tracer soak (issue 10, part 2): many attach/analyze/detach cycles must leave the target's
//! results identical to an untraced run and never leave it stopped or traced; a tracer killed
//! with SIGKILL at random moments must leave the target running.
//!
//! Targets: `fixtures/reliability/checksum.c` (built here; 4 threads computing a checksum that
//! is compared with an untraced run, restarted whenever it finishes) and
//! `fixtures/build/isa/threads8` (8 threads spinning forever). Cycles alternate between them.
//!
//! `SOAK_CYCLES` (default 50; scripts/reliability.sh runs 1000) attach/analyze/detach cycles
//! through the library (`trace::trace_pid`), then `SOAK_KILLS` (default 50; the script runs
//! 100) runs of the `tracer` binary SIGKILLed after a random delay within its measured run
//! time. Prints `RELIABILITY soak ...` lines for scripts/reliability.sh.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use testkit::Rng;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn env_u64(k: &str, d: u64) -> u64 {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

/// Builds fixtures/reliability/checksum.c into the target directory, once per test run
/// (tests run in parallel: a second build would rewrite the file another test executes).
fn checksum_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("reliability-checksum");
        let src = root().join("fixtures/reliability/checksum.c");
        let st = Command::new("cc").args(["-O2", "-g", "-pthread", "-o"]).arg(&out).arg(&src).status().expect("run cc");
        assert!(st.success(), "cc {} failed", src.display());
        out
    })
    .clone()
}

const ROUNDS: &str = "5000";
const THREADS: &str = "4";

/// What the checksum fixture prints when nobody traces it.
fn untraced_checksum(bin: &Path) -> String {
    let out = Command::new(bin).args([ROUNDS, THREADS]).output().unwrap();
    assert!(out.status.success());
    let reference = String::from_utf8(out.stdout).unwrap().replace("ready\n", "");
    assert!(reference.starts_with("checksum "), "{reference}");
    reference
}

/// A running process, killed on drop; started and waited for until it prints "ready".
struct Target {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Target {
    fn start(cmd: &mut Command) -> Target {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start target");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.starts_with("ready"), "target printed {line:?}");
        Target { child, out }
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    /// The rest of its output once it exits (None while it runs).
    fn finished(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(None) => return None,
            Ok(Some(_)) => {}
            // This test process is also the target's tracer: the tracer's waitpid(__WALL) may
            // have reaped the exiting target already (never the case for the `tracer` binary,
            // which is not the target's parent).
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {}
            Err(e) => panic!("wait for the target: {e}"),
        }
        let mut s = String::new();
        self.out.read_to_string(&mut s).unwrap();
        Some(s)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the process (or any thread) is stopped or still traced; waits up to 1 s for the
/// kernel to finish detaching a dead tracer's tracees.
fn left_stopped(pid: i32) -> Option<String> {
    let t0 = Instant::now();
    loop {
        let mut bad = None;
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>());
        for t in tasks.unwrap_or_default() {
            let s = std::fs::read_to_string(t.join("status")).unwrap_or_default();
            let state = s.lines().find(|l| l.starts_with("State:")).unwrap_or("").to_string();
            let tracer = s.lines().find(|l| l.starts_with("TracerPid:")).unwrap_or("").to_string();
            if state.contains("t (") || state.contains("T (") || (!tracer.is_empty() && !tracer.ends_with("\t0")) {
                bad = Some(format!("{}: {state} {tracer}", t.display()));
            }
        }
        if bad.is_none() || t0.elapsed() > Duration::from_secs(1) {
            return bad;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn feature_names(fs: &tracer::report::FeatureSet) -> Vec<String> {
    let mut v: Vec<String> = fs.features.iter().map(|f| f.name.clone()).collect();
    v.sort();
    v
}


#[test]
fn attach_analyze_detach_cycles() {
    let cycles = env_u64("SOAK_CYCLES", 50);
    let bin = checksum_bin();
    let reference = untraced_checksum(&bin);
    let checksum = || Target::start(Command::new(&bin).args([ROUNDS, THREADS]));
    let mut ck = checksum();
    let spin = Target::start(&mut Command::new(root().join("fixtures/build/isa/threads8")));
    let opts = tracer::trace::Options::default();
    let (mut first_ck, mut first_spin) = (None::<Vec<String>>, None);
    let mut ck_sets = std::collections::BTreeSet::new();
    let (mut runs, mut stopped, mut mismatches, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let t0 = Instant::now();
    let mut done = 0;
    while done < cycles {
        if let Some(out) = ck.finished() {
            runs += 1;
            if out != reference {
                mismatches += 1;
                eprintln!("soak: checksum run {runs} printed {out:?}, untraced {reference:?}");
            }
            ck = checksum();
        }
        let (pid, first) = if done % 2 == 0 { (ck.pid(), &mut first_ck) } else { (spin.pid(), &mut first_spin) };
        match tracer::trace::trace_pid(pid, &opts) {
            Ok(fs) => {
                // The spinner is in a steady state: the same code is reachable every time, the
                // same feature set. A checksum process may be caught starting up (a thread in
                // the dynamic loader's lazy-binding trampoline adds xsave/xsavec), so its sets
                // are only counted.
                let names = feature_names(&fs);
                if pid == spin.pid() {
                    match first {
                        None => *first = Some(names),
                        Some(f) => assert_eq!(&names, f, "cycle {done}: threads8's feature set changed"),
                    }
                } else {
                    ck_sets.insert(names);
                }
            }
            // The checksum process may exit mid-trace: that is a clean error, not a failure.
            Err(e) if pid == ck.pid() && ck.finished().is_some() => {
                eprintln!("soak: target exited mid-trace: {e}");
                errors += 1;
                ck = checksum();
                continue;
            }
            Err(e) => panic!("cycle {done}: trace of {pid} failed: {e}"),
        }
        if let Some(s) = left_stopped(pid) {
            stopped += 1;
            eprintln!("soak: cycle {done}: left stopped: {s}");
        }
        done += 1;
    }
    // Let the last checksum run finish and compare it too.
    let out = loop {
        if let Some(o) = ck.finished() {
            break o;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    runs += 1;
    if out != reference {
        mismatches += 1;
    }
    println!(
        "RELIABILITY soak cycles={done} secs={:.1} checksum_runs={runs} mismatches={mismatches} left_stopped={stopped} exited_mid_trace={errors} checksum_feature_sets={}",
        t0.elapsed().as_secs_f64(),
        ck_sets.len()
    );
    assert_eq!(stopped, 0, "targets left stopped");
    assert_eq!(mismatches, 0, "traced checksum runs differ from the untraced run");
}

#[test]
fn tracer_sigkilled_at_random_moments() {
    let kills = env_u64("SOAK_KILLS", 50);
    let bin = checksum_bin();
    let reference = untraced_checksum(&bin);
    let mut ck = Target::start(Command::new(&bin).args([ROUNDS, THREADS]));
    let spin = Target::start(&mut Command::new(root().join("fixtures/build/isa/threads8")));
    let tracer_cmd = |pid: i32| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tracer"));
        c.args(["--pid", &pid.to_string(), "--json"]).stdout(Stdio::null()).stderr(Stdio::null());
        c
    };
    // How long a whole run takes: kills are spread over all of it (attach, analysis, exit).
    let t = Instant::now();
    assert!(tracer_cmd(spin.pid()).status().unwrap_or_else(|e| panic!("run the tracer: {e}")).success());
    let run_us = t.elapsed().as_micros().max(1000) as u64;
    let mut rng = Rng(env_u64("SOAK_SEED", run_us ^ std::process::id() as u64));
    let (mut stopped, mut mismatches, mut runs) = (0u64, 0u64, 0u64);
    let t0 = Instant::now();
    for i in 0..kills {
        if let Some(out) = ck.finished() {
            runs += 1;
            mismatches += (out != reference) as u64;
            ck = Target::start(Command::new(&bin).args([ROUNDS, THREADS]));
        }
        let pid = if i % 2 == 0 { ck.pid() } else { spin.pid() };
        let mut c = tracer_cmd(pid).spawn().unwrap();
        // Half the kills in the first 2 ms (the attach), the rest anywhere in the run.
        let delay = if rng.next() % 2 == 0 { rng.next() % 2000 } else { rng.next() % run_us };
        std::thread::sleep(Duration::from_micros(delay));
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
        let _ = c.wait();
        if let Some(s) = left_stopped(pid) {
            stopped += 1;
            eprintln!("soak: kill {i} after {delay} µs: target left stopped: {s}");
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
    }
    // Both targets keep making progress, and the checksum is still right.
    let spin_ticks = || {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", spin.pid())).unwrap();
        let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let before = spin_ticks();
    let out = loop {
        if let Some(o) = ck.finished() {
            break o;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    runs += 1;
    mismatches += (out != reference) as u64;
    assert!(spin_ticks() > before, "threads8 stopped making progress");
    println!(
        "RELIABILITY kill kills={kills} secs={:.1} run_us={run_us} checksum_runs={runs} mismatches={mismatches} left_stopped={stopped}",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(stopped, 0, "targets left stopped after the tracer was SIGKILLed");
    assert_eq!(mismatches, 0, "checksum differs from the untraced run");
}

//! Network migration with the real binary, real TCP (loopback) and real
//! wasmtime: two daemons ("hosts" A and B, each with its own runtime
//! directory), a task moved from A to B, and the faults of issue 9: the
//! destination killed at each protocol step, the connection cut mid-transfer,
//! a corrupt frame, a wrong key, an oversized frame, an incompatible
//! destination. After each, the task runs on exactly one host and its output
//! (A's log, then B's log when it moved) equals an uninterrupted run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_migrator"))
}

fn fixture(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let st = Command::new(root().join("fixtures/wasm/build.sh")).stdout(Stdio::null()).status().expect("run fixtures/wasm/build.sh");
        assert!(st.success(), "fixtures/wasm/build.sh failed");
    });
    root().join("fixtures/build/wasm").join(name)
}

fn cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("migrator-cache")
}

/// One "host": a daemon with its own runtime dir; killed on drop.
struct Host {
    dir: tempfile::TempDir,
    key: PathBuf,
    port: u16,
    child: Option<Child>,
    stderr: PathBuf,
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn key_file(dir: &Path, name: &str, key: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, key).unwrap();
    p
}

const KEY: &str = "test-key-0123456789abcdef0123456789";

impl Host {
    fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("MIGRATOR_RUNTIME_DIR", self.dir.path().join("run"))
            .env("MIGRATOR_CACHE_DIR", cache())
            .env("MIGRATION_TOKEN_FILE", &self.key)
            .env("MIGRATOR_TRACER", tracer_bin())
            .env_remove("ARM_MIGRATION_HOST")
            .env_remove("MIGRATOR_FAULT");
        c
    }

    /// Starts a daemon. `listen`: receive tasks on a fresh loopback port.
    fn start(listen: bool, key: &str, extra: &[&str], env: &[(&str, &str)]) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let keyp = key_file(dir.path(), "key", key);
        let port = free_port();
        let stderr = dir.path().join("serve.err");
        let mut h = Host { dir, key: keyp, port, child: None, stderr: stderr.clone() };
        let mut c = h.cmd();
        c.arg("serve");
        if listen {
            c.args(["--listen", &format!("127.0.0.1:{port}")]);
        } else {
            c.arg("--no-listen");
        }
        c.args(extra);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdout(Stdio::null()).stderr(std::fs::File::create(&stderr).unwrap());
        h.child = Some(c.spawn().expect("start migrator serve"));
        let t = Instant::now();
        loop {
            let up = h.dir.path().join("run/daemon.sock").exists() && (!listen || TcpStream::connect(("127.0.0.1", port)).is_ok());
            if up {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "daemon did not start: {}", h.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        h
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn out(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(format!("run/logs/{name}.stdout"))).unwrap_or_default()
    }

    fn ps(&self) -> Vec<serde_json::Value> {
        let o = self.cmd().args(["ps", "--json"]).output().unwrap();
        serde_json::from_slice(&o.stdout).unwrap_or_default()
    }

    fn state(&self, name: &str) -> Option<String> {
        self.ps().into_iter().find(|t| t["name"] == name).and_then(|t| t["state"].as_str().map(String::from))
    }

    fn wait_state(&self, name: &str, want: &[&str], timeout: Duration) -> String {
        let t = Instant::now();
        loop {
            if let Some(s) = self.state(name) {
                if want.contains(&s.as_str()) {
                    return s;
                }
            }
            assert!(t.elapsed() < timeout, "task {name} never reached {want:?} (now {:?}); log:\n{}", self.state(name), self.log());
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn run(&self, name: &str, module: &Path, args: &[&str]) {
        let o = self.cmd().args(["run", "--detach", "--name", name]).arg(module).arg("--").args(args).output().unwrap();
        assert!(o.status.success(), "run --detach: {}", String::from_utf8_lossy(&o.stderr));
        self.wait_state(name, &["running"], Duration::from_secs(10));
    }

    fn migrate(&self, name: &str, to: &str, extra: &[&str]) -> std::process::Output {
        self.cmd().args(["migrate", "--json", "--timeout", "5", "--task", name, "--to", to]).args(extra).output().unwrap()
    }

    fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

/// Uninterrupted run's stdout.
fn full_run(module: &Path, args: &[&str]) -> Vec<u8> {
    let o = Command::new(bin()).env("MIGRATOR_CACHE_DIR", cache()).env("MIGRATOR_RUNTIME_DIR", tempfile::tempdir().unwrap().path()).arg("run").arg(module).arg("--").args(args).output().unwrap();
    assert!(o.status.success());
    o.stdout
}

const HC_ARGS: &[&str] = &["300000"];

/// The task is still on A, ran to the end there, output complete.
fn assert_stayed_on_a(a: &Host, b: &Host, full: &[u8]) {
    a.wait_state("t", &["exited"], Duration::from_secs(60));
    assert_eq!(a.out("t"), full, "A's output differs from the uninterrupted run\nA log:\n{}", a.log());
    assert!(b.ps().iter().all(|t| t["name"] != "t" || t["state"] != "running"), "task also runs on B");
}

fn assert_moved(a: &Host, b: &Host, full: &[u8]) {
    b.wait_state("t", &["exited"], Duration::from_secs(120));
    assert_eq!(a.state("t").as_deref(), Some("migrated"));
    let mut both = a.out("t");
    both.extend(b.out("t"));
    assert_eq!(String::from_utf8_lossy(&both), String::from_utf8_lossy(full), "A+B output differs from the uninterrupted run");
}

/// `--verify`: both sides reported the same state hash.
/// Runs task "t" on A, lets it work `settle_ms`, migrates it to B with `flags` and
/// returns A's report, checked: the command succeeded and both sides' state hashes agree.
fn migrate_verified(a: &Host, b: &Host, module: &Path, args: &[&str], settle_ms: u64, flags: &[&str]) -> serde_json::Value {
    a.run("t", module, args);
    std::thread::sleep(Duration::from_millis(settle_ms));
    let o = a.migrate("t", &b.addr(), flags);
    assert!(o.status.success(), "migrate failed: {}\n{}", String::from_utf8_lossy(&o.stderr), a.log());
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_verified(&rep);
    rep
}

fn assert_verified(rep: &serde_json::Value) {
    let h = rep["state_hash"].as_str().unwrap_or_else(|| panic!("no state_hash: {rep}"));
    assert_eq!(h.len(), 8, "{rep}");
    assert_eq!(rep["dest_state_hash"].as_str(), Some(h), "{rep}");
}

#[test]
fn state_differing_after_restore_is_caught_by_verify() {
    let hc = fixture("hashchain.wasm");
    let full = full_run(&hc, HC_ARGS);
    let a = Host::start(false, KEY, &[], &[]);
    let b = Host::start(true, KEY, &[], &[("MIGRATOR_FAULT", "corrupt_restored")]);
    a.run("t", &hc, HC_ARGS);
    std::thread::sleep(Duration::from_millis(200));
    let o = a.migrate("t", &b.addr(), &["--verify"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("state verification failed") && err.contains("resumed"), "{err}");
    assert_stayed_on_a(&a, &b, &full);
}

#[test]
fn stop_and_copy_to_pulley_output_identical() {
    let hc = fixture("hashchain.wasm");
    let full = full_run(&hc, HC_ARGS);
    let a = Host::start(false, KEY, &[], &[]);
    let b = Host::start(true, KEY, &["--engine", "pulley"], &[]);
    let rep = migrate_verified(&a, &b, &hc, HC_ARGS, 300, &["--verify"]);
    assert_eq!(rep["dest_engine"], "pulley");
    assert!(rep["downtime_ms"].as_f64().unwrap() > 0.0);
    assert_moved(&a, &b, &full);
    assert!(a.log().contains("[Migration] Checkpointing task t for migration..."));
    assert!(a.log().contains("[Migration] Successfully sent state to"));
}

#[test]
fn live_precopy_output_identical_and_precompiled_fast_path() {
    assert!(tracer_bin().exists(), "tracer binary missing: run `cargo build --workspace --bins`");
    let mm = fixture("matmul.wasm");
    let args = ["300", "60"];
    let full = full_run(&mm, &args);
    let a = Host::start(false, KEY, &[], &[]);
    let b = Host::start(true, KEY, &[], &[]);
    let rep = migrate_verified(&a, &b, &mm, &args, 300, &["--live", "--verify"]);
    assert!(!rep["rounds"].as_array().unwrap().is_empty(), "no pre-copy rounds: {rep}");
    // Same host, same wasmtime: tracer check passes and compiled code travels.
    assert_eq!(rep["code"], "precompiled", "{rep}");
    assert_moved(&a, &b, &full);
}

/// A foreground `migrator run` (no daemon on A) moves too: its process ends
/// once B runs the task, and its stdout plus B's continue the same stream.
#[test]
fn foreground_task_migrates() {
    let hc = fixture("hashchain.wasm");
    let full = full_run(&hc, HC_ARGS);
    let a = Host::start(false, KEY, &[], &[]);
    let b = Host::start(true, KEY, &[], &[]);
    let out_path = a.dir.path().join("fg.stdout");
    let mut fg = Command::new(bin());
    // The key is read by the process that holds the task.
    fg.env("MIGRATOR_RUNTIME_DIR", a.dir.path().join("fg-run")).env("MIGRATOR_CACHE_DIR", cache()).env("MIGRATION_TOKEN_FILE", &a.key);
    let mut fg = fg.args(["run", "--name", "fgt"]).arg(&hc).arg("--").args(HC_ARGS).stdout(std::fs::File::create(&out_path).unwrap()).stderr(Stdio::null()).spawn().unwrap();
    let t = Instant::now();
    while !a.dir.path().join("fg-run/tasks/fgt.sock").exists() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let o = a.cmd().env("MIGRATOR_RUNTIME_DIR", a.dir.path().join("fg-run")).args(["migrate", "--json", "--verify", "--task", "fgt", "--to", &b.addr()]).output().unwrap();
    assert!(o.status.success(), "migrate of a foreground task failed: {}", String::from_utf8_lossy(&o.stderr));
    assert_verified(&serde_json::from_slice(&o.stdout).unwrap());
    let st = fg.wait().unwrap();
    assert!(st.success(), "foreground process: {st:?}");
    b.wait_state("fgt", &["exited"], Duration::from_secs(120));
    let mut both = std::fs::read(&out_path).unwrap();
    both.extend(b.out("fgt"));
    assert_eq!(String::from_utf8_lossy(&both), String::from_utf8_lossy(&full), "foreground + B output differs from the uninterrupted run");
}

/// `--live` on a task that rewrites its memory without pause (random data,
/// so a page sent stale cannot go unnoticed): the pages found changed by
/// kernel write tracking must give exactly the stopped state (`--verify`)
/// and the same checksum as an uninterrupted run.
#[test]
fn live_migration_of_a_rewriting_task_is_exact() {
    let af = fixture("alloc_fill.wasm");
    let args = ["16", "200", "random"]; // ~3 s
    let full = full_run(&af, &args);
    let a = Host::start(false, KEY, &[], &[]);
    let b = Host::start(true, KEY, &[], &[]);
    let rep = migrate_verified(&a, &b, &af, &args, 400, &["--live", "--verify"]);
    assert!(rep["rounds"].as_array().unwrap().len() >= 2, "{rep}");
    assert_eq!(rep["dirty_tracking"], "userfaultfd write tracking", "{rep}");
    assert_moved(&a, &b, &full);
}

#[test]
fn incompatible_destination_refused_before_the_task_stops() {
    assert!(tracer_bin().exists(), "tracer binary missing: run `cargo build --workspace --bins`");
    let hc = fixture("hashchain.wasm");
    let full = full_run(&hc, HC_ARGS);
    // A destination with only the x86-64 baseline: compiled code using anything more cannot run there.
    let d = tempfile::tempdir().unwrap();
    let host = d.path().join("baseline-host.json");
    std::fs::write(&host, r#"{"schema":"featureset/1","kind":"host","arch":"x86_64","subject":{"hostname":"old","cpu_model":"x86-64 baseline"},"features":[]}"#).unwrap();
    let a = Host::start(false, KEY, &[], &[]);
    let b = Host::start(true, KEY, &["--host-features", host.to_str().unwrap()], &[]);
    a.run("t", &hc, HC_ARGS);
    let o = a.migrate("t", &b.addr(), &["--code", "precompiled"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refused before the task was stopped") && err.contains("lacks"), "{err}");
    assert!(!a.log().contains("Checkpointing task t"), "the task was stopped: {}", a.log());
    assert_stayed_on_a(&a, &b, &full);
    // With --code auto the same destination takes the portable module.
    let a2 = Host::start(false, KEY, &[], &[]);
    a2.run("t", &hc, HC_ARGS);
    let o = a2.migrate("t", &b.addr(), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["code"], "portable");
    assert!(rep["code_reason"].as_str().unwrap().contains("lacks"), "{rep}");
    assert_moved(&a2, &b, &full);
}

#[test]
fn wrong_key_is_refused_and_task_stays() {
    let hc = fixture("hashchain.wasm");
    let full = full_run(&hc, HC_ARGS);
    let a = Host::start(false, KEY, &[], &[]);
    let b = Host::start(true, "a-completely-different-key-xyz", &[], &[]);
    a.run("t", &hc, HC_ARGS);
    let o = a.migrate("t", &b.addr(), &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("authentication"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_stayed_on_a(&a, &b, &full);
}

#[test]
fn oversized_and_garbage_frames_from_unauthenticated_peer() {
    let mut b = Host::start(true, KEY, &[], &[]);
    // A 1 GiB frame header: refused from the header, nothing buffered.
    let mut s = TcpStream::connect(b.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&(1u32 << 30).to_le_bytes()).unwrap();
    let _ = s.write_all(&[1u8; 64]);
    let mut buf = [0u8; 16];
    let t = Instant::now();
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected the connection to be closed");
    assert!(t.elapsed() < Duration::from_secs(4));
    // Garbage: closed too.
    let mut s = TcpStream::connect(b.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0);
    assert!(b.alive(), "destination died");
    // And it still takes tasks.
    let hc = fixture("hashchain.wasm");
    let full = full_run(&hc, HC_ARGS);
    let a = Host::start(false, KEY, &[], &[]);
    a.run("t", &hc, HC_ARGS);
    let o = a.migrate("t", &b.addr(), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_moved(&a, &b, &full);
    assert!(b.log().contains("exceeds the limit"), "{}", b.log());
}

/// The source misbehaves (`MIGRATOR_FAULT` on A): the task resumes on A.
fn source_fault(fault: &str, live: bool) {
    source_fault_then(fault, live, false);
}

/// `MIGRATOR_FAULT` on A; `moved`: the fault came after the commit (the
/// source must resolve the outcome), else the task must stay on (or resume on) A.
fn source_fault_then(fault: &str, live: bool, moved: bool) {
    let hc = fixture("hashchain.wasm");
    let full = full_run(&hc, HC_ARGS);
    let a = Host::start(false, KEY, &[], &[("MIGRATOR_FAULT", fault)]);
    let b = Host::start(true, KEY, &[], &[]);
    a.run("t", &hc, HC_ARGS);
    std::thread::sleep(Duration::from_millis(200));
    let o = a.migrate("t", &b.addr(), if live { &["--live"] } else { &[] });
    let err = String::from_utf8_lossy(&o.stderr);
    if moved {
        // The source asks B what became of the migration. Usually B has
        // started it; if the question overtakes the commit, B declares it
        // aborted instead and the task resumes on A. Either way: one host.
        assert!(a.log().contains("asking"), "the source did not resolve the outcome: {err}\n{}", a.log());
        if o.status.success() {
            assert_moved(&a, &b, &full);
        } else {
            assert_stayed_on_a(&a, &b, &full);
        }
    } else {
        assert!(!o.status.success(), "migration should have failed");
        assert!(err.contains("migrating task t"), "{err}");
        assert_stayed_on_a(&a, &b, &full);
    }
}

#[test]
fn corrupt_frame_resumes_on_source() {
    source_fault("corrupt_frame", true);
}

#[test]
fn connection_cut_mid_transfer_resumes_on_source() {
    source_fault("cut_transfer", false);
}

#[test]
fn connection_cut_by_source_at_each_step() {
    source_fault("cut_after_offer", false);
    source_fault("cut_mid_precopy", true);
    source_fault("cut_before_commit", false);
    // Commit was sent: the destination starts the task; the source learns it by asking.
    source_fault_then("cut_after_commit", false, true);
}

/// The `migrate` command is killed (SIGKILL) at random moments: the daemon
/// carries the handover through, and the task ends on exactly one host.
#[test]
fn migrate_command_killed_mid_handover() {
    let hc = fixture("hashchain.wasm");
    let full = full_run(&hc, HC_ARGS);
    for delay_ms in [2u64, 30, 120] {
        let a = Host::start(false, KEY, &[], &[]);
        let b = Host::start(true, KEY, &[], &[]);
        a.run("t", &hc, HC_ARGS);
        std::thread::sleep(Duration::from_millis(200));
        let mut cli = a.cmd().args(["migrate", "--live", "--task", "t", "--to", &b.addr()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = cli.kill();
        let _ = cli.wait();
        let t = Instant::now();
        let on_a = loop {
            match a.state("t").as_deref() {
                Some("migrated") => break false,
                Some("exited") => break true,
                _ => {}
            }
            assert!(t.elapsed() < Duration::from_secs(60), "task neither finished on A nor migrated: {:?}\n{}", a.state("t"), a.log());
            std::thread::sleep(Duration::from_millis(25));
        };
        if on_a {
            assert_stayed_on_a(&a, &b, &full);
        } else {
            assert_moved(&a, &b, &full);
        }
    }
}

/// The destination is killed (SIGKILL) at `step`.
fn dest_killed(step: &str) {
    let hc = fixture("hashchain.wasm");
    let full = full_run(&hc, HC_ARGS);
    let a = Host::start(false, KEY, &[], &[]);
    let mut b = Host::start(true, KEY, &[], &[("MIGRATOR_FAULT", step)]);
    a.run("t", &hc, HC_ARGS);
    std::thread::sleep(Duration::from_millis(200));
    let o = a.migrate("t", &b.addr(), &["--live"]);
    assert!(!o.status.success(), "{step}: migration should have failed");
    let t = Instant::now();
    while b.alive() {
        assert!(t.elapsed() < Duration::from_secs(5), "{step}: destination not dead");
        std::thread::sleep(Duration::from_millis(10));
    }
    // B is gone (and with it anything it ran); the task continues on A only, complete.
    a.wait_state("t", &["exited"], Duration::from_secs(60));
    assert_eq!(a.out("t"), full, "{step}: A's output differs\n{}", a.log());
}

#[test]
fn dest_killed_after_welcome() {
    dest_killed("after_welcome");
}
#[test]
fn dest_killed_mid_module() {
    dest_killed("mid_module");
}
#[test]
fn dest_killed_mid_state() {
    dest_killed("mid_state");
}
#[test]
fn dest_killed_before_restored() {
    dest_killed("before_restored");
}
#[test]
fn dest_killed_after_restored() {
    dest_killed("after_restored");
}
#[test]
fn dest_killed_after_commit() {
    dest_killed("after_commit");
}
#[test]
fn dest_killed_after_start_before_confirming() {
    dest_killed("after_start");
}

#[test]
fn trigger_moves_highest_priority_then_largest_task() {
    let hc = fixture("hashchain.wasm");
    let full = full_run(&hc, HC_ARGS);
    let b = Host::start(true, KEY, &[], &[]);
    // First candidate unreachable: the next one takes the task.
    let dead = format!("127.0.0.1:{}", free_port());
    let a = Host::start(false, KEY, &["--migrate-to", &format!("{dead},{}", b.addr())], &[]);
    a.run("low", &hc, &["3000000"]);
    let o = a.cmd().args(["run", "--detach", "--priority", "5", "--name", "t"]).arg(&hc).arg("--").args(HC_ARGS).output().unwrap();
    assert!(o.status.success());
    a.wait_state("t", &["running"], Duration::from_secs(10));
    let mut s = std::os::unix::net::UnixStream::connect(a.dir.path().join("run/daemon.sock")).unwrap();
    s.write_all(b"{\"cmd\":\"trigger\",\"event\":{\"event\":\"trigger\",\"metric\":\"page_cache\",\"value\":900.0,\"threshold\":800,\"unit\":\"MB\"}}\n").unwrap();
    let mut ans = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&s), &mut ans).unwrap();
    assert!(ans.contains("\"ok\":true") && ans.contains("moving t"), "{ans}");
    assert_moved(&a, &b, &full);
    assert_eq!(a.state("low").as_deref(), Some("running"), "only one task per trigger");
    let _ = a.cmd().args(["kill", "--task", "low"]).output();
}

/// The workspace's `tracer` binary, next to this test's own target directory
/// (`target/debug/deps/net-…` → `target/debug/tracer`), wherever CARGO_TARGET_DIR points.
fn tracer_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let debug = exe.parent().and_then(|d| d.parent()).expect("target/debug");
    debug.join("tracer")
}

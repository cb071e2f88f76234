//! The real binary: foreground tasks found by name, checkpoint/restore
//! across engines, and bad input giving one-line errors with exit code 2.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_migrator"))
}

/// A migrator command with its own runtime dir and the shared cache.
pub fn cmd(rt: &Path) -> Command {
    let mut c = Command::new(bin());
    c.env("MIGRATOR_RUNTIME_DIR", rt).env("MIGRATOR_CACHE_DIR", cache_dir()).env_remove("RUST_LOG");
    c
}

/// Kills the child on drop, so a failing test leaves nothing running.
pub struct Guard(pub Option<Child>);
impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
impl Guard {
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.0.take().unwrap().wait().unwrap()
    }
}

/// Waits until `migrator ps --json` shows `name` in `state`.
pub fn wait_state(rt: &Path, name: &str, state: &str, timeout: Duration) {
    let t = Instant::now();
    loop {
        let o = cmd(rt).args(["ps", "--json"]).output().unwrap();
        let tasks: Vec<migrator::control::TaskInfo> = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if tasks.iter().any(|t| t.name == name && t.state == state) {
            return;
        }
        assert!(t.elapsed() < timeout, "task {name} never reached {state}: {}", String::from_utf8_lossy(&o.stdout));
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn one_line_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "exit code for {needle}: stderr {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn foreground_checkpoint_restore_across_engines() {
    let m = fixture("matmul.wasm");
    let rt = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let a = ["150", "30"];
    let full = cmd(rt.path()).arg("run").arg(&m).arg("--").args(a).output().unwrap();
    assert!(full.status.success());

    // 1. Cranelift, foreground, stopped by `checkpoint --task` from another process.
    let out1 = std::fs::File::create(d.path().join("1.out")).unwrap();
    let mut g = Guard(Some(cmd(rt.path()).args(["run", "--name", "mm", "--priority", "3"]).arg(&m).arg("--").args(a).stdout(out1).spawn().unwrap()));
    wait_state(rt.path(), "mm", "running", Duration::from_secs(20));
    // Any moment will do; early enough that a fast host has not finished.
    std::thread::sleep(Duration::from_millis(20));
    let img1 = d.path().join("1.img");
    let c = cmd(rt.path()).args(["checkpoint", "--task", "mm", "-o"]).arg(&img1).output().unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    assert!(g.wait().success());

    // 2. Pulley, restored in the foreground, name kept from the image.
    let out2 = std::fs::File::create(d.path().join("2.out")).unwrap();
    let mut g = Guard(Some(cmd(rt.path()).args(["restore", "--engine", "pulley"]).arg(&img1).stdout(out2).spawn().unwrap()));
    wait_state(rt.path(), "mm", "running", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(300));
    let img2 = d.path().join("2.img");
    let c = cmd(rt.path()).args(["checkpoint", "--task", "mm", "-o"]).arg(&img2).output().unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    assert!(g.wait().success());

    // 3. Cranelift again, to the end.
    let o3 = cmd(rt.path()).arg("restore").arg(&img2).output().unwrap();
    assert!(o3.status.success(), "{}", String::from_utf8_lossy(&o3.stderr));
    let mut all = std::fs::read(d.path().join("1.out")).unwrap();
    all.extend(std::fs::read(d.path().join("2.out")).unwrap());
    all.extend(o3.stdout);
    assert_eq!(String::from_utf8_lossy(&all), String::from_utf8_lossy(&full.stdout));
}

#[test]
fn leave_running_keeps_task_and_image_restores() {
    let m = fixture("hashchain.wasm");
    let rt = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let full = cmd(rt.path()).arg("run").arg(&m).arg("--").arg("60000").output().unwrap();
    let mut g = Guard(Some(cmd(rt.path()).args(["run", "--name", "hc"]).arg(&m).arg("--").arg("60000").stdout(Stdio::piped()).spawn().unwrap()));
    wait_state(rt.path(), "hc", "running", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(20));
    let img = d.path().join("hc.img");
    let c = cmd(rt.path()).args(["checkpoint", "--leave-running", "--task", "hc", "-o"]).arg(&img).output().unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    let child = g.0.take().unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(o.stdout, full.stdout, "the task kept running to the same end");
    let r = cmd(rt.path()).args(["restore", "--engine", "pulley"]).arg(&img).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(full.stdout.ends_with(&r.stdout), "restored output continues the run");
    assert!(String::from_utf8_lossy(&r.stdout).contains("final"));
}

#[test]
fn kill_ends_foreground_task() {
    let m = fixture("hashchain.wasm");
    let rt = tempfile::tempdir().unwrap();
    let mut g = Guard(Some(cmd(rt.path()).args(["run", "--name", "k"]).arg(&m).arg("--").arg("100000000").stdout(Stdio::null()).spawn().unwrap()));
    wait_state(rt.path(), "k", "running", Duration::from_secs(20));
    let k = cmd(rt.path()).args(["kill", "--task", "k"]).output().unwrap();
    assert!(k.status.success());
    assert_eq!(g.wait().code(), Some(137));
}

#[test]
fn bad_input_is_one_line_exit_2() {
    let rt = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let o = cmd(rt.path()).args(["run", "/nonexistent/x.wasm"]).output().unwrap();
    one_line_error(&o, "/nonexistent/x.wasm");
    let o = cmd(rt.path()).arg("run").arg(fixture("not-wasm.wasm")).output().unwrap();
    one_line_error(&o, "not a WebAssembly module");
    let o = cmd(rt.path()).args(["restore", "/nonexistent.img"]).output().unwrap();
    one_line_error(&o, "/nonexistent.img");
    let o = cmd(rt.path()).args(["checkpoint", "--task", "nobody", "-o", "/tmp/x.img"]).output().unwrap();
    one_line_error(&o, "no task named");
    let o = cmd(rt.path()).arg("restore").arg(fixture("not-wasm.wasm")).output().unwrap();
    one_line_error(&o, "not a migrator checkpoint image");

    // A real image, then corrupted, versioned wrong, and given the wrong module.
    let mut g = Guard(Some(cmd(rt.path()).args(["run", "--name", "b"]).arg(fixture("hashchain.wasm")).arg("--").arg("100000000").stdout(Stdio::null()).spawn().unwrap()));
    wait_state(rt.path(), "b", "running", Duration::from_secs(20));
    let img = d.path().join("b.img");
    assert!(cmd(rt.path()).args(["checkpoint", "--task", "b", "-o"]).arg(&img).output().unwrap().status.success());
    assert!(g.wait().success());
    let bytes = std::fs::read(&img).unwrap();
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    std::fs::write(d.path().join("bad.img"), &bad).unwrap();
    let o = cmd(rt.path()).arg("restore").arg(d.path().join("bad.img")).output().unwrap();
    one_line_error(&o, "checksum");
    let mut v = bytes.clone();
    v[8] = 7;
    std::fs::write(d.path().join("v.img"), &v).unwrap();
    let o = cmd(rt.path()).arg("restore").arg(d.path().join("v.img")).output().unwrap();
    one_line_error(&o, "version 7");
    std::fs::write(d.path().join("t.img"), &bytes[..bytes.len() / 3]).unwrap();
    let o = cmd(rt.path()).arg("restore").arg(d.path().join("t.img")).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = cmd(rt.path()).args(["restore", "--module"]).arg(fixture("matmul.wasm")).arg(&img).output().unwrap();
    one_line_error(&o, "wrong module");
}

#[test]
fn deep_stack_gets_a_big_enough_unwind_buffer() {
    // A 1-page default buffer: the poll must size it from the live stack
    // (asyncify itself never bounds-checks). Snapshot with --leave-running
    // until one lands deep in the 20000-level recursion.
    let m = fixture("recursion.wasm");
    let rt = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let a = ["20000", "3000"];
    let full = cmd(rt.path()).arg("run").arg(&m).arg("--").args(a).output().unwrap();
    let mut g = Guard(Some(
        cmd(rt.path()).env("MIGRATOR_ASYNCIFY_PAGES", "1").args(["run", "--name", "deep"]).arg(&m).arg("--").args(a).stdout(Stdio::piped()).spawn().unwrap(),
    ));
    wait_state(rt.path(), "deep", "running", Duration::from_secs(20));
    let img = d.path().join("deep.img");
    let mut deep = false;
    for i in 0..30 {
        std::thread::sleep(Duration::from_millis(3 + i % 7));
        let c = cmd(rt.path()).args(["checkpoint", "--leave-running", "--task", "deep", "-o"]).arg(&img).output().unwrap();
        if !c.status.success() {
            break; // the task finished
        }
        if std::fs::metadata(&img).unwrap().len() > 100_000 {
            deep = true;
            break;
        }
    }
    assert!(deep, "no snapshot landed deep in the recursion");
    let o = g.0.take().unwrap().wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(o.stdout, full.stdout, "the task continued correctly after a deep unwind and rewind");
    let r = cmd(rt.path()).env("MIGRATOR_ASYNCIFY_PAGES", "1").arg("restore").arg(&img).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(full.stdout.ends_with(&r.stdout) && String::from_utf8_lossy(&r.stdout).contains("final"));
}

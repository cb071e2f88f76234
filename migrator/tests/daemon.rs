//! `migrator serve`: tasks under the daemon, driven over its socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::cli::{cmd, wait_state, Guard};
use crate::util::*;

fn raw(rt: &std::path::Path, line: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(rt.join("daemon.sock")).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    let mut a = String::new();
    BufReader::new(&s).read_line(&mut a).unwrap();
    serde_json::from_str(&a).unwrap()
}

#[test]
fn daemon_runs_checkpoints_restores_and_survives_unknown_commands() {
    let m = fixture("matmul.wasm");
    let rt = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let full = cmd(rt.path()).arg("run").arg(&m).arg("--").args(["150", "30"]).output().unwrap();
    let _daemon = Guard(Some(cmd(rt.path()).arg("serve").stderr(std::process::Stdio::null()).spawn().unwrap()));
    let t = std::time::Instant::now();
    while !rt.path().join("daemon.sock").exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "daemon did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The monitor's trigger lines and unknown commands are answered, never fatal.
    let v = raw(rt.path(), r#"{"cmd":"trigger","metric":"page_cache","value":9000.5}"#);
    assert_eq!(v["ok"], true);
    let v = raw(rt.path(), r#"{"cmd":"frobnicate"}"#);
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("frobnicate"));
    let v = raw(rt.path(), "not json at all");
    assert_eq!(v["ok"], false);

    let out = d.path().join("mm.out");
    let r = cmd(rt.path()).args(["run", "--detach", "--name", "dm", "--stdout"]).arg(&out).arg(&m).arg("--").args(["150", "30"]).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    wait_state(rt.path(), "dm", "running", Duration::from_secs(10));

    let img = d.path().join("dm.img");
    let c = cmd(rt.path()).args(["checkpoint", "--task", "dm", "-o"]).arg(&img).output().unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    wait_state(rt.path(), "dm", "checkpointed", Duration::from_secs(10));
    // Not running anywhere now: a second checkpoint is refused.
    let again = cmd(rt.path()).args(["checkpoint", "--task", "dm", "-o"]).arg(d.path().join("x.img")).output().unwrap();
    assert!(!again.status.success());

    let r = cmd(rt.path()).args(["restore", "--detach", "--engine", "pulley", "--stdout"]).arg(&out).arg(&img).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    wait_state(rt.path(), "dm", "exited", Duration::from_secs(120));
    assert_eq!(String::from_utf8_lossy(&std::fs::read(&out).unwrap()), String::from_utf8_lossy(&full.stdout));

    // kill through the daemon
    let r = cmd(rt.path()).args(["run", "--detach", "--name", "long"]).arg(fixture("hashchain.wasm")).arg("--").arg("100000000").output().unwrap();
    assert!(r.status.success());
    wait_state(rt.path(), "long", "running", Duration::from_secs(10));
    assert!(cmd(rt.path()).args(["kill", "--task", "long"]).output().unwrap().status.success());
    wait_state(rt.path(), "long", "killed", Duration::from_secs(10));
}

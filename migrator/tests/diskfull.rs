//! Disk full while writing a checkpoint image (issue 10, part 3): `migrator checkpoint -o` into
//! a 1 MiB tmpfs, for a task under the daemon and a foreground task, whose image (16 MiB of
//! incompressible memory) cannot fit. Each attempt must fail with one line naming the path and
//! ENOSPC, leave nothing in the directory (no partial image, no temporary file), and leave the
//! task running; a later checkpoint elsewhere works, and the task's output equals an
//! uninterrupted run's. Needs root (mount).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cli::{cmd, wait_state, Guard};
use crate::util::*;

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop (also when a test fails).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let d = tempfile::tempdir().unwrap();
        let o = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(d.path()).output().unwrap();
        assert!(o.status.success(), "mount tmpfs (run as root): {}", String::from_utf8_lossy(&o.stderr));
        Tmpfs(d)
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

const ARGS: &[&str] = &["16", "250", "random"];

/// Three checkpoints into the full tmpfs (two stopping, one `--leave-running`), then one that
/// fits; returns the number of disk-full attempts.
fn checkpoint_into_full_disk(rt: &Path, name: &str) -> usize {
    let full = Tmpfs::mount("1m");
    let img = full.path().join(format!("{name}.img"));
    let attempts = [false, true, false];
    for leave_running in attempts {
        std::thread::sleep(Duration::from_millis(150));
        let mut c = cmd(rt);
        c.args(["checkpoint", "--task", name, "-o"]).arg(&img);
        if leave_running {
            c.arg("--leave-running");
        }
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "checkpoint into a full disk succeeded: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err}");
        assert!(err.contains("No space left on device") && err.contains(&img.display().to_string()), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        let left: Vec<PathBuf> = std::fs::read_dir(full.path()).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(left.is_empty(), "left behind in the full directory: {left:?}");
        wait_state(rt, name, "running", Duration::from_secs(5));
    }
    // The failed attempts left no checkpoint pending: one on a disk with room works.
    let ok = tempfile::tempdir().unwrap();
    let o = cmd(rt).args(["checkpoint", "--leave-running", "--task", name, "-o"]).arg(ok.path().join("ok.img")).output().unwrap();
    assert!(o.status.success(), "checkpoint with room failed: {}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::metadata(ok.path().join("ok.img")).unwrap().len() > 16 << 20, "image smaller than the task's memory");
    attempts.len()
}

fn uninterrupted(rt: &Path) -> Vec<u8> {
    let o = cmd(rt).arg("run").arg(fixture("alloc_fill.wasm")).arg("--").args(ARGS).output().unwrap();
    assert!(o.status.success());
    o.stdout
}

#[test]
fn disk_full_checkpoint_of_daemon_task() {
    let rt = tempfile::tempdir().unwrap();
    let full = uninterrupted(rt.path());
    let _daemon = Guard(Some(cmd(rt.path()).args(["serve", "--no-listen"]).stderr(Stdio::null()).spawn().unwrap()));
    let t = std::time::Instant::now();
    while !rt.path().join("daemon.sock").exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "daemon did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = cmd(rt.path()).args(["run", "--detach", "--name", "df"]).arg(fixture("alloc_fill.wasm")).arg("--").args(ARGS).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    wait_state(rt.path(), "df", "running", Duration::from_secs(20));
    let n = checkpoint_into_full_disk(rt.path(), "df");
    wait_state(rt.path(), "df", "exited", Duration::from_secs(60));
    let out = std::fs::read(rt.path().join("logs/df.stdout")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&full), "output differs from the uninterrupted run");
    println!("RELIABILITY diskfull mode=daemon attempts={n} failures=0");
}

#[test]
fn disk_full_checkpoint_of_foreground_task() {
    let rt = tempfile::tempdir().unwrap();
    let full = uninterrupted(rt.path());
    let mut g = Guard(Some(
        cmd(rt.path()).args(["run", "--name", "dff"]).arg(fixture("alloc_fill.wasm")).arg("--").args(ARGS).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap(),
    ));
    wait_state(rt.path(), "dff", "running", Duration::from_secs(20));
    let n = checkpoint_into_full_disk(rt.path(), "dff");
    let o = g.0.take().unwrap().wait_with_output().unwrap();
    assert!(o.status.success(), "foreground task failed after the disk-full checkpoints: {:?}", o.status);
    assert_eq!(String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&full), "output differs from the uninterrupted run");
    println!("RELIABILITY diskfull mode=foreground attempts={n} failures=0");
}

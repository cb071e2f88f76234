//! Bad input: one line on stderr, exit 2, no panic.
use crate::util::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

fn one_line_exit_2(args: &[&str], envs: &[(&str, &str)], needle: &str) {
    let (code, out, err) = run_once(args, envs);
    assert_eq!(code, 2, "{args:?}: stdout {out:?} stderr {err:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: not one line: {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
}

#[test]
fn bad_flag_values() {
    one_line_exit_2(&["--interval", "abc"], &[], "--interval");
    one_line_exit_2(&["--interval", "0"], &[], "--interval");
    one_line_exit_2(&["--cache-threshold", "-5"], &[], "--cache-threshold");
    one_line_exit_2(&["--memory-threshold", "150"], &[], "--memory-threshold");
    one_line_exit_2(&["--temp-threshold", "hot"], &[], "--temp-threshold");
    one_line_exit_2(&["--count", "0"], &[], "--count");
    one_line_exit_2(&["--no-such-flag"], &[], "--no-such-flag");
    one_line_exit_2(&["--hysteresis", "100"], &[], "--hysteresis");
}

#[test]
fn bad_environment() {
    one_line_exit_2(&["--duration", "1"], &[("MIGRATION_CACHE_THRESHOLD_MB", "lots")], "MIGRATION_CACHE_THRESHOLD_MB");
    one_line_exit_2(&["--duration", "1"], &[("MIGRATION_TEMP_THRESHOLD_C", "")], "MIGRATION_TEMP_THRESHOLD_C");
}

#[test]
fn nonexistent_sysfs_root() {
    one_line_exit_2(&["--sysfs-root", "/nonexistent/sys", "--duration", "1"], &[], "/nonexistent/sys");
}

#[test]
fn not_root() {
    // A copy nobody can execute from a world-readable place.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("monitor-probe");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&bin)
        .args(["--duration", "1"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    assert!(err.contains("run as root"), "{err}");
    assert!(!err.contains("panicked"));
}

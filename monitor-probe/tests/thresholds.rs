//! Threshold precedence: flag > environment > default, shown by --print-config and by live runs.
use crate::util::*;
use monitor_probe::event::{EventKind::*, Metric::Temperature};
use std::time::Duration;

fn config(args: &[&str], envs: &[(&str, &str)]) -> serde_json::Value {
    let mut all = vec!["--print-config"];
    all.extend_from_slice(args);
    let (code, out, err) = run_once(&all, envs);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn print_config_shows_precedence() {
    let env = [
        ("MIGRATION_CACHE_THRESHOLD_MB", "4096"),
        ("MIGRATION_TEMP_THRESHOLD_C", "70"),
    ];
    let c = config(&["--cache-threshold", "100"], &env);
    let t = &c["thresholds"];
    assert_eq!(t["cache_mb"]["value"], 100.0);
    assert_eq!(t["cache_mb"]["origin"], "flag");
    assert_eq!(t["temp_c"]["value"], 70.0);
    assert_eq!(t["temp_c"]["origin"], "env");
    assert_eq!(t["memory_pct"]["value"], 85.0);
    assert_eq!(t["memory_pct"]["origin"], "default");
    let d = config(&[], &[]);
    assert_eq!(d["thresholds"]["cache_mb"]["value"], 8192.0);
    assert_eq!(d["thresholds"]["temp_c"]["value"], 80.0);
}

/// 85 °C (hot fixture): env 90 suppresses the default-80 trigger; flag 84 overrides env 90.
#[test]
fn live_precedence_with_hot_fixture() {
    require_root();
    let root = fixture("hot");
    let root = root.to_str().unwrap();
    let env = [("MIGRATION_TEMP_THRESHOLD_C", "90")];

    let mut p = spawn(&["--sysfs-root", root, "--interval", "0.1", "--duration", "1.5"], &env);
    assert!(p.finish(Duration::from_secs(10)).success());
    assert_eq!(p.count(Trigger, Temperature), 0, "env 90 should hold back 85 °C");
    assert!(p.seen.iter().any(|e| e.metric == Temperature && e.threshold == Some(90.0)));

    let mut p = spawn(&["--sysfs-root", root, "--interval", "0.1", "--temp-threshold", "84", "--count", "1"], &env);
    let t = p.expect(Duration::from_secs(10), "trigger at flag 84", is(Trigger, Temperature));
    assert_eq!(t.threshold, Some(84.0));
}

//! Temperature from fake sysfs trees (fixtures/sysfs), with the real eBPF programs loaded.
use crate::util::*;
use monitor_probe::event::{EventKind::*, Metric::Temperature, Source};
use std::time::Duration;

#[test]
fn hot_fixture_triggers_at_default_80c() {
    require_root();
    let root = fixture("hot");
    let mut p = spawn(&["--sysfs-root", root.to_str().unwrap(), "--interval", "0.2", "--count", "1"], &[]);
    let ev = p.expect(Duration::from_secs(10), "temperature trigger", is(Trigger, Temperature));
    assert_eq!(ev.value, 85.0);
    assert_eq!(ev.threshold, Some(80.0));
    assert_eq!(ev.unit, "°C");
    assert_eq!(ev.source, Some(Source::Sysfs));
    assert!(ev.detail["sensor"].as_str().unwrap().starts_with("thermal_zone0"), "{:?}", ev.detail);
    assert!(p.finish(Duration::from_secs(5)).success());
}

#[test]
fn rising_temperature_triggers_then_clears() {
    require_root();
    let dir = fixture_copy("cool");
    let f = dir.path().join("class/hwmon/hwmon0/temp1_input");
    let mut p = spawn(&["--sysfs-root", dir.path().to_str().unwrap(), "--interval", "0.1", "--cooldown", "0"], &[]);
    let s = p.expect(Duration::from_secs(10), "temperature sample", is(Sample, Temperature));
    assert_eq!(s.value, 45.5);
    set_temp(&f, 85.0);
    let t = p.expect(Duration::from_secs(3), "trigger", is(Trigger, Temperature));
    assert_eq!(t.value, 85.0);
    set_temp(&f, 77.0); // above the clear level (80 - 5% = 76): still triggered
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(p.count(Clear, Temperature), 0);
    set_temp(&f, 60.0);
    let c = p.expect(Duration::from_secs(3), "clear", is(Clear, Temperature));
    assert_eq!(c.threshold, Some(76.0));
}

#[test]
fn hovering_and_flapping_do_not_storm() {
    require_root();
    let dir = fixture_copy("cool");
    let f = dir.path().join("class/hwmon/hwmon0/temp1_input");
    let mut p = spawn(
        &["--sysfs-root", dir.path().to_str().unwrap(), "--interval", "0.05", "--cooldown", "60", "--hysteresis", "5"],
        &[],
    );
    p.expect(Duration::from_secs(10), "first sample", is(Sample, Temperature));
    // 1.5 s hovering around the limit, then 1.5 s flapping across both levels, every 50 ms.
    for i in 0..30 {
        set_temp(&f, if i % 2 == 0 { 80.4 } else { 79.6 });
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..30 {
        set_temp(&f, if i % 2 == 0 { 70.0 } else { 85.0 });
        std::thread::sleep(Duration::from_millis(50));
    }
    set_temp(&f, 60.0);
    std::thread::sleep(Duration::from_millis(300));
    drop(p.wait_for(Duration::from_millis(100), |_| false));
    let samples = p.count(Sample, Temperature);
    assert!(samples >= 30, "expected many samples, got {samples}");
    assert_eq!(p.count(Trigger, Temperature), 1, "{:#?}", p.seen.iter().filter(|e| e.event != Sample).collect::<Vec<_>>());
    assert_eq!(p.count(Clear, Temperature), 1);
}

#[test]
fn predicts_before_crossing() {
    require_root();
    let dir = fixture_copy("cool");
    let f = dir.path().join("class/hwmon/hwmon0/temp1_input");
    set_temp(&f, 50.0);
    let mut p = spawn(&["--sysfs-root", dir.path().to_str().unwrap(), "--interval", "0.2", "--predict", "10"], &[]);
    p.expect(Duration::from_secs(10), "first sample", is(Sample, Temperature));
    // +2 °C every 200 ms = 10 °C/s: 80 °C is reached 3 s after the start.
    let writer = std::thread::spawn(move || {
        for i in 1..=20 {
            set_temp(&f, 50.0 + 2.0 * i as f64);
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let pr = p.expect(Duration::from_secs(6), "predict", |e| e.event == Predict || e.event == Trigger);
    assert_eq!(pr.event, Predict, "trigger came before any prediction");
    assert_eq!(pr.metric, Temperature);
    assert_eq!(pr.threshold, Some(80.0));
    let eta = pr.detail["eta_s"].as_f64().unwrap();
    assert!(eta > 0.0 && eta <= 10.0, "eta {eta}");
    assert!(pr.value < 80.0);
    p.expect(Duration::from_secs(6), "trigger after the prediction", is(Trigger, Temperature));
    assert_eq!(p.count(Predict, Temperature), 1);
    writer.join().unwrap();
}

#[test]
fn empty_tree_has_no_temperature() {
    require_root();
    let root = fixture("empty");
    let mut p = spawn(&["--sysfs-root", root.to_str().unwrap(), "--interval", "0.1", "--duration", "1"], &[]);
    assert!(p.finish(Duration::from_secs(10)).success());
    assert!(p.seen.iter().any(|e| e.metric == monitor_probe::event::Metric::PageCache));
    assert_eq!(p.seen.iter().filter(|e| e.metric == Temperature).count(), 0);
}

#[test]
fn human_lines() {
    require_root();
    let root = fixture("hot");
    let (code, out, err) = run_once(&["--sysfs-root", root.to_str().unwrap(), "--interval", "0.2", "--duration", "0.7"], &[]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("[Migration Trigger] Threshold exceeded! temperature 85 °C >= 80 °C"), "{out}");
    let monitor = lines.next().unwrap();
    let re_ok = monitor.starts_with("[Monitor] Cache: ") && monitor.contains(" MB, Temp: 85.0°C, Memory: ") && monitor.ends_with('%');
    assert!(re_ok, "{monitor}");
}

//! Temperature sensors under a sysfs root: thermal zones and hwmon.
//!
//! `ROOT/class/thermal/thermal_zone*/temp` and `ROOT/class/hwmon/hwmon*/temp*_input`, both in
//! millidegrees Celsius. `--sysfs-root` points `ROOT` at a fake tree (fixtures/sysfs) in tests.
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    /// `thermal_zone0 (x86_pkg_temp)`, `hwmon1/temp2 (coretemp: Core 0)`.
    pub label: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub celsius: f64,
    pub label: String,
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn sorted_dir(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Every temperature sensor under `root` (none is fine: many VMs have none).
pub fn discover(root: &Path) -> Vec<Sensor> {
    let mut out = Vec::new();
    for zone in sorted_dir(&root.join("class/thermal")) {
        let name = zone.file_name().unwrap_or_default().to_string_lossy().to_string();
        if !name.starts_with("thermal_zone") || !zone.join("temp").exists() {
            continue;
        }
        let ty = read_trim(&zone.join("type")).unwrap_or_default();
        out.push(Sensor { label: format!("{name} ({ty})"), path: zone.join("temp") });
    }
    for hw in sorted_dir(&root.join("class/hwmon")) {
        let hname = hw.file_name().unwrap_or_default().to_string_lossy().to_string();
        let chip = read_trim(&hw.join("name")).unwrap_or_default();
        for f in sorted_dir(&hw) {
            let fname = f.file_name().unwrap_or_default().to_string_lossy().to_string();
            let Some(idx) = fname.strip_prefix("temp").and_then(|s| s.strip_suffix("_input")) else { continue };
            let label = read_trim(&hw.join(format!("temp{idx}_label"))).unwrap_or_else(|| format!("temp{idx}"));
            out.push(Sensor { label: format!("{hname}/temp{idx} ({chip}: {label})"), path: f });
        }
    }
    out
}

/// The hottest sensor that can be read now (a sensor that fails to read is skipped).
pub fn hottest(sensors: &[Sensor]) -> Option<Reading> {
    sensors
        .iter()
        .filter_map(|s| {
            let milli: f64 = read_trim(&s.path)?.parse().ok()?;
            Some(Reading { celsius: milli / 1000.0, label: s.label.clone() })
        })
        .max_by(|a, b| a.celsius.total_cmp(&b.celsius))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/sysfs").join(name)
    }

    #[test]
    fn hot_fixture_reads_85c_from_the_thermal_zone() {
        let s = discover(&fixture("hot"));
        assert_eq!(s.len(), 3, "{s:?}");
        let r = hottest(&s).unwrap();
        assert_eq!(r.celsius, 85.0);
        assert!(r.label.starts_with("thermal_zone0"), "{}", r.label);
    }

    #[test]
    fn cool_fixture_reads_hwmon() {
        let r = hottest(&discover(&fixture("cool"))).unwrap();
        assert_eq!(r.celsius, 45.5);
        assert!(r.label.contains("coretemp: Package id 0"), "{}", r.label);
    }

    #[test]
    fn empty_tree_has_no_sensors() {
        assert!(discover(&fixture("empty")).is_empty());
    }
}

//! Thresholds and run options. Thresholds come from flags, else the environment, else defaults.
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

pub const ENV_CACHE: &str = "MIGRATION_CACHE_THRESHOLD_MB";
pub const ENV_TEMP: &str = "MIGRATION_TEMP_THRESHOLD_C";
pub const ENV_MEMORY: &str = "MIGRATION_MEMORY_THRESHOLD_PCT";
pub const ENV_STALL: &str = "MIGRATION_STALL_THRESHOLD_MS";
pub const DEFAULT_CACHE_MB: f64 = 8192.0;
pub const DEFAULT_TEMP_C: f64 = 80.0;
pub const DEFAULT_MEMORY_PCT: f64 = 85.0;
pub const DEFAULT_STALL_MS: f64 = 100.0;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("invalid {name}={value:?}: expected {expected}")]
    BadEnv { name: &'static str, value: String, expected: &'static str },
    #[error("invalid {what} {value}: expected {expected}")]
    BadValue { what: &'static str, value: f64, expected: &'static str },
    #[error("sysfs root {0} does not exist (give --sysfs-root an existing directory, e.g. /sys)")]
    NoSysfsRoot(PathBuf),
}

/// Where a threshold came from (shown by `--print-config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Flag,
    Env,
    Default,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Threshold {
    pub value: f64,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    /// MB of page cache (meminfo `Cached - Shmem`).
    pub cache_mb: Threshold,
    /// °C, hottest sensor.
    pub temp_c: Threshold,
    /// memory_pressure %, see [`crate::procfs::MemInfo::pressure_pct`].
    pub memory_pct: Threshold,
    /// One reclaim stall longer than this many ms is a trigger.
    pub stall_ms: Threshold,
}

/// Thresholds given on the command line (None: not given).
#[derive(Debug, Clone, Copy, Default)]
pub struct ThresholdFlags {
    pub cache_mb: Option<f64>,
    pub temp_c: Option<f64>,
    pub memory_pct: Option<f64>,
    pub stall_ms: Option<f64>,
}

fn pick(
    flag: Option<f64>,
    flag_name: &'static str,
    name: &'static str,
    default: f64,
    max: f64,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Threshold, ConfigError> {
    let expected = if max.is_finite() { "a number > 0 and <= 100" } else { "a number > 0" };
    let ok = |v: f64| v.is_finite() && v > 0.0 && v <= max;
    if let Some(v) = flag {
        if !ok(v) {
            return Err(ConfigError::BadValue { what: flag_name, value: v, expected });
        }
        return Ok(Threshold { value: v, origin: Origin::Flag });
    }
    if let Some(raw) = env(name) {
        let v: f64 = raw
            .trim()
            .parse()
            .ok()
            .filter(|v| ok(*v))
            .ok_or(ConfigError::BadEnv { name, value: raw.clone(), expected })?;
        return Ok(Threshold { value: v, origin: Origin::Env });
    }
    Ok(Threshold { value: default, origin: Origin::Default })
}

impl Thresholds {
    /// Flags > environment (`env` looks a variable up) > defaults.
    pub fn resolve(flags: ThresholdFlags, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(Thresholds {
            cache_mb: pick(flags.cache_mb, "--cache-threshold", ENV_CACHE, DEFAULT_CACHE_MB, f64::INFINITY, env)?,
            temp_c: pick(flags.temp_c, "--temp-threshold", ENV_TEMP, DEFAULT_TEMP_C, f64::INFINITY, env)?,
            memory_pct: pick(flags.memory_pct, "--memory-threshold", ENV_MEMORY, DEFAULT_MEMORY_PCT, 100.0, env)?,
            stall_ms: pick(flags.stall_ms, "--stall-threshold-ms", ENV_STALL, DEFAULT_STALL_MS, f64::INFINITY, env)?,
        })
    }

    /// From flags and the process environment.
    pub fn from_env(flags: ThresholdFlags) -> Result<Self, ConfigError> {
        Self::resolve(flags, &|n| std::env::var(n).ok())
    }
}

/// How page cache is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// eBPF programs on the tracepoints (the normal mode).
    Ebpf,
    /// Baseline for benchmarks: read /proc/meminfo every `--interval`, no eBPF.
    Poll,
}

/// Everything `monitor::run` needs.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub thresholds: Thresholds,
    /// Clear level = threshold * (1 - hysteresis_pct / 100).
    pub hysteresis_pct: f64,
    /// At most one trigger per metric per cooldown.
    pub cooldown: Duration,
    pub interval: Duration,
    /// Re-seed the page-cache count from /proc/meminfo this often (zero: never).
    pub resync: Duration,
    pub predict: Option<Duration>,
    pub json: bool,
    pub sysfs_root: PathBuf,
    pub exec: Option<PathBuf>,
    pub notify: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub host: String,
    pub top: usize,
    /// Put the top files in every page_cache sample too (one map walk per sample).
    pub sample_top: bool,
    pub mode: Mode,
    /// PSI trigger: wake when tasks stalled on memory this long within a 2 s window.
    pub psi_stall: Duration,
}

impl Options {
    /// Defaults with the given thresholds (what the CLI starts from).
    pub fn new(thresholds: Thresholds) -> Self {
        Options {
            thresholds,
            hysteresis_pct: 5.0,
            cooldown: Duration::from_secs(30),
            interval: Duration::from_secs(1),
            resync: Duration::from_secs(10),
            predict: None,
            json: false,
            sysfs_root: PathBuf::from("/sys"),
            exec: None,
            notify: None,
            duration: None,
            count: None,
            host: crate::procfs::hostname(),
            top: 5,
            sample_top: false,
            mode: Mode::Ebpf,
            psi_stall: Duration::from_millis(100),
        }
    }

    /// Checks that do not need root; `monitor::run` calls it first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.sysfs_root.is_dir() {
            return Err(ConfigError::NoSysfsRoot(self.sysfs_root.clone()));
        }
        if !(0.0..100.0).contains(&self.hysteresis_pct) {
            return Err(ConfigError::BadValue { what: "--hysteresis", value: self.hysteresis_pct, expected: "0 <= pct < 100" });
        }
        Ok(())
    }

    /// Clear level for a threshold.
    pub fn clear_level(&self, threshold: f64) -> f64 {
        threshold * (1.0 - self.hysteresis_pct / 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())
    }

    #[test]
    fn precedence_flag_env_default() {
        let env = env_of(&[(ENV_CACHE, "100"), (ENV_TEMP, "70")]);
        let flags = ThresholdFlags { cache_mb: Some(50.0), ..Default::default() };
        let t = Thresholds::resolve(flags, &env).unwrap();
        assert_eq!(t.cache_mb, Threshold { value: 50.0, origin: Origin::Flag });
        assert_eq!(t.temp_c, Threshold { value: 70.0, origin: Origin::Env });
        assert_eq!(t.memory_pct, Threshold { value: 85.0, origin: Origin::Default });
    }

    #[test]
    fn bad_env_and_flags_are_errors() {
        let env = env_of(&[(ENV_MEMORY, "lots")]);
        let err = Thresholds::resolve(ThresholdFlags::default(), &env).unwrap_err();
        assert!(err.to_string().contains("MIGRATION_MEMORY_THRESHOLD_PCT"), "{err}");
        let env = env_of(&[(ENV_MEMORY, "120")]);
        assert!(Thresholds::resolve(ThresholdFlags::default(), &env).is_err());
        let flags = ThresholdFlags { temp_c: Some(-1.0), ..Default::default() };
        assert!(Thresholds::resolve(flags, &env_of(&[])).is_err());
    }
}

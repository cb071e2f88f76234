//! Monitor events: the kernel's ring-buffer record ([`RawEvent`]) and the JSON line
//! `monitor-probe --json` prints ([`Event`]).
//!
//! # JSON format (one object a line, see docs/monitor.md)
//!
//! ```json
//! {"ts":"2026-11-24T10:00:00.123Z","event":"trigger","metric":"page_cache","value":8234.1,
//!  "threshold":8192.0,"unit":"MB","host":"a","source":"ebpf","mono_ns":123,"kernel_ns":120,
//!  "detail":{"top":[{"dev":"253:0","ino":1234,"mb":512.0}]}}
//! ```
//! `ts`, `event`, `metric`, `value`, `unit`, `host` are always there; the rest are optional and
//! readers ignore keys they do not know.
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Periodic value (every `--interval`).
    Sample,
    /// The value reached the threshold.
    Trigger,
    /// The value fell back below the clear level (threshold minus hysteresis).
    Clear,
    /// The trend will reach the threshold within the `--predict` horizon.
    Predict,
}

/// Which figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Page cache without shared memory, MB (MiB): in-kernel count, seeded from meminfo `Cached - Shmem`.
    PageCache,
    /// Hottest sensor, °C.
    Temperature,
    /// `100 * (1 - MemAvailable / MemTotal)`, %.
    MemoryPressure,
    /// Time tasks spent in direct / memory-cgroup reclaim, ms.
    ReclaimStall,
    /// In-kernel page-cache count minus meminfo `Cached - Shmem` at a resync, MB.
    PageCacheDrift,
}

impl Metric {
    pub fn unit(self) -> &'static str {
        match self {
            Metric::PageCache | Metric::PageCacheDrift => "MB",
            Metric::Temperature => "°C",
            Metric::MemoryPressure => "%",
            Metric::ReclaimStall => "ms",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Metric::PageCache => "page_cache",
            Metric::Temperature => "temperature",
            Metric::MemoryPressure => "memory_pressure",
            Metric::ReclaimStall => "reclaim_stall",
            Metric::PageCacheDrift => "page_cache_drift",
        }
    }
}

/// Where the value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A ring-buffer record or an eBPF map.
    Ebpf,
    /// Thermal zones / hwmon under `--sysfs-root`.
    Sysfs,
    /// /proc/meminfo.
    Meminfo,
    /// A PSI trigger on /proc/pressure/memory woke us.
    Psi,
}

/// One line of `--json` output; also what `--exec` and `--notify` receive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Wall-clock time, RFC 3339 UTC with milliseconds.
    pub ts: String,
    pub event: EventKind,
    pub metric: Metric,
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    pub unit: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// CLOCK_MONOTONIC when monitor-probe produced this line (ns).
    #[serde(default)]
    pub mono_ns: u64,
    /// CLOCK_MONOTONIC when the kernel program saw the crossing (ns); minus `mono_ns` is the
    /// kernel → userspace delivery latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
}

impl Event {
    pub fn new(event: EventKind, metric: Metric, value: f64, threshold: Option<f64>, host: &str) -> Self {
        Event {
            ts: rfc3339_now(),
            event,
            metric,
            value: round1(value),
            threshold: threshold.map(round1),
            unit: metric.unit().to_string(),
            host: host.to_string(),
            source: None,
            mono_ns: crate::clock::monotonic_ns(),
            kernel_ns: None,
            detail: serde_json::Value::Null,
        }
    }

    /// The `[Migration Trigger] ...` style line for human output.
    pub fn human(&self) -> String {
        let thr = self.threshold.map(|t| format!("{t}")).unwrap_or_else(|| "-".into());
        let (m, v, u) = (self.metric.name(), self.value, &self.unit);
        match self.event {
            EventKind::Trigger => format!("[Migration Trigger] Threshold exceeded! {m} {v} {u} >= {thr} {u}"),
            EventKind::Clear => format!("[Migration Trigger] Cleared: {m} {v} {u} < {thr} {u}"),
            EventKind::Predict => {
                let eta = self.detail.get("eta_s").and_then(|e| e.as_f64()).unwrap_or(f64::NAN);
                format!("[Migration Predict] {m} {v} {u} will reach {thr} {u} in ~{eta:.1} s")
            }
            EventKind::Sample => format!("[Monitor] {m}: {v} {u}"),
        }
    }
}

pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// `2026-11-24T10:00:00.123Z` for now.
pub fn rfc3339_now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_millis())
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn rfc3339(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Mirrors `struct monitor_event` in ebpf/monitor.h (48 bytes, little endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEvent {
    pub ts_ns: u64,
    pub value: i64,
    pub threshold: i64,
    pub ino: u64,
    pub kind: u32,
    pub metric: u32,
    pub dev: u32,
    pub id: u32,
}

pub const EV_SAMPLE: u32 = 0;
pub const EV_TRIGGER: u32 = 1;
pub const EV_CLEAR: u32 = 2;
pub const M_PAGE_CACHE: u32 = 0;
pub const M_TEMPERATURE: u32 = 1;
pub const M_RECLAIM_STALL: u32 = 2;
/// Set in `RawEvent::id` of a reclaim stall that was a memory-cgroup reclaim.
pub const MEMCG_FLAG: u32 = 1 << 31;

impl RawEvent {
    pub const SIZE: usize = 48;

    /// Parse a ring-buffer record; `None` if it is too short (a mismatched object).
    pub fn parse(b: &[u8]) -> Option<RawEvent> {
        if b.len() < Self::SIZE {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        Some(RawEvent {
            ts_ns: u64_at(0),
            value: u64_at(8) as i64,
            threshold: u64_at(16) as i64,
            ino: u64_at(24),
            kind: u32_at(32),
            metric: u32_at(36),
            dev: u32_at(40),
            id: u32_at(44),
        })
    }
}

/// Kernel `dev_t` (major << 20 | minor) as `major:minor`.
pub fn dev_name(dev: u32) -> String {
    format!("{}:{}", dev >> 20, dev & ((1 << 20) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        // 2026-11-24T10:00:00Z
        assert_eq!(rfc3339(1_795_514_400, 123), "2026-11-24T10:00:00.123Z");
    }

    #[test]
    fn raw_event_roundtrip() {
        let mut b = Vec::new();
        for v in [1u64, (-5i64) as u64, 7, 99] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [EV_TRIGGER, M_PAGE_CACHE, (8 << 20) | 1, 3] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let e = RawEvent::parse(&b).unwrap();
        assert_eq!((e.ts_ns, e.value, e.threshold, e.ino), (1, -5, 7, 99));
        assert_eq!((e.kind, e.metric, e.id), (EV_TRIGGER, M_PAGE_CACHE, 3));
        assert_eq!(dev_name(e.dev), "8:1");
        assert!(RawEvent::parse(&b[..47]).is_none());
    }

    #[test]
    fn event_json_has_contract_keys() {
        let e = Event::new(EventKind::Trigger, Metric::PageCache, 8234.14, Some(8192.0), "a");
        let v: serde_json::Value = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "trigger");
        assert_eq!(v["metric"], "page_cache");
        assert_eq!(v["value"], 8234.1);
        assert_eq!(v["threshold"], 8192.0);
        assert_eq!(v["unit"], "MB");
        assert_eq!(v["host"], "a");
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
        assert!(e.human().starts_with("[Migration Trigger] Threshold exceeded!"));
    }
}

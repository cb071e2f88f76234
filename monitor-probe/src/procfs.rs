//! /proc readers: meminfo, PSI averages, hostname.
use std::io;
use std::path::Path;

/// The /proc/meminfo fields monitor-probe uses, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub total_kb: u64,
    pub available_kb: u64,
    pub cached_kb: u64,
    pub shmem_kb: u64,
    pub buffers_kb: u64,
}

impl MemInfo {
    pub fn parse(text: &str) -> MemInfo {
        let mut m = MemInfo::default();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(key), Some(val)) = (it.next(), it.next()) else { continue };
            let Ok(val) = val.parse::<u64>() else { continue };
            match key {
                "MemTotal:" => m.total_kb = val,
                "MemAvailable:" => m.available_kb = val,
                "Cached:" => m.cached_kb = val,
                "Shmem:" => m.shmem_kb = val,
                "Buffers:" => m.buffers_kb = val,
                _ => {}
            }
        }
        m
    }

    pub fn read() -> io::Result<MemInfo> {
        Self::read_from(Path::new("/proc/meminfo"))
    }

    pub fn read_from(path: &Path) -> io::Result<MemInfo> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    /// Page cache the way the project reconciles it: `Cached - Shmem`, in MiB.
    pub fn cache_mb(&self) -> f64 {
        self.cached_kb.saturating_sub(self.shmem_kb) as f64 / 1024.0
    }

    /// memory_pressure: the share of memory the kernel could not hand out without swapping,
    /// `100 * (1 - MemAvailable / MemTotal)`.
    pub fn pressure_pct(&self) -> f64 {
        if self.total_kb == 0 {
            return 0.0;
        }
        100.0 * (1.0 - self.available_kb as f64 / self.total_kb as f64)
    }
}

/// `some avg10` from /proc/pressure/memory: % of the last 10 s some task stalled on memory.
pub fn psi_some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace().find_map(|f| f.strip_prefix("avg10=")).and_then(|v| v.parse().ok())
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_and_derived_values() {
        let m = MemInfo::parse(
            "MemTotal:       1000000 kB\nMemFree: 1 kB\nMemAvailable:    250000 kB\nBuffers: 10 kB\nCached:  307200 kB\nShmem: 102400 kB\n",
        );
        assert_eq!(m.total_kb, 1_000_000);
        assert_eq!(m.cache_mb(), 200.0);
        assert!((m.pressure_pct() - 75.0).abs() < 1e-9);
    }

    #[test]
    fn psi_avg10() {
        let t = "some avg10=1.25 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.50 avg60=0.00 avg300=0.00 total=5\n";
        assert_eq!(psi_some_avg10(t), Some(1.25));
    }
}

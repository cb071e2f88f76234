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

/// Kernel `dev_t` (major << 20 | minor) of every shmem-backed file system: tmpfs / devtmpfs
/// mounts visible in /proc/self/mountinfo, plus the internal mount behind memfd, SysV shm and
/// shared anonymous memory (the st_dev of a fresh memfd).
pub fn shmem_devs() -> Vec<u32> {
    let mut devs: Vec<u32> = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| shmem_devs_in_mountinfo(&t))
        .unwrap_or_default();
    if let Ok(fd) = nix::sys::memfd::memfd_create(c"monitor-probe", nix::sys::memfd::MFdFlags::MFD_CLOEXEC) {
        if let Ok(st) = nix::sys::stat::fstat(&fd) {
            let (ma, mi) = (libc::major(st.st_dev), libc::minor(st.st_dev));
            devs.push((ma << 20) | mi);
        }
    }
    devs.sort_unstable();
    devs.dedup();
    devs
}

pub fn shmem_devs_in_mountinfo(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| {
            // 36 35 0:25 / /dev/shm rw,nosuid - tmpfs tmpfs rw   (fs type follows " - ")
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            if fstype != "tmpfs" && fstype != "devtmpfs" {
                return None;
            }
            let (ma, mi) = left.split_whitespace().nth(2)?.split_once(':')?;
            Some((ma.parse::<u32>().ok()? << 20) | mi.parse::<u32>().ok()?)
        })
        .collect()
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
    fn shmem_devs_from_mountinfo() {
        let t = "22 1 253:0 / / rw,relatime - ext4 /dev/vda rw\n25 22 0:21 / /dev/shm rw - tmpfs tmpfs rw\n26 22 0:5 / /dev rw - devtmpfs udev rw\n";
        assert_eq!(shmem_devs_in_mountinfo(t), vec![21, 5]);
    }

    #[test]
    fn psi_avg10() {
        let t = "some avg10=1.25 avg60=0.00 avg300=0.00 total=10\nfull avg10=0.50 avg60=0.00 avg300=0.00 total=5\n";
        assert_eq!(psi_some_avg10(t), Some(1.25));
    }
}

//! Loading and attaching the programs in `ebpf/`, and the maps they share with userspace.
//!
//! Index constants mirror ebpf/monitor.h.
//!
//! # Minimum kernel version
//! 5.12 (ring buffers, BPF atomics with fetch: `-mcpu=v3`), with BTF (`CONFIG_DEBUG_INFO_BTF`)
//! and the `filemap`, `thermal` and `vmscan` tracepoints. Tested on 6.18.
use aya::maps::{Array, HashMap, MapData, MapError, RingBuf};
use aya::programs::{ProgramError, TracePoint};
use aya::{Ebpf, EbpfError, EbpfLoader};
use std::io;

static PAGE_CACHE_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/page_cache.bpf.o"));
static THERMAL_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/thermal.bpf.o"));
static RECLAIM_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/reclaim.bpf.o"));

pub const CFG_TRIGGER: u32 = 0;
pub const CFG_CLEAR: u32 = 1;
pub const CFG_MIN_GAP_NS: u32 = 2;
pub const CFG_SAMPLE_NS: u32 = 3;
pub const ST_DELTA: u32 = 0;
pub const ST_BASE: u32 = 1;
pub const ST_ABOVE: u32 = 2;
pub const ST_DROPPED: u32 = 5;
pub const ST_STALL_NS: u32 = 6;
pub const ST_STALLS: u32 = 7;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("loading eBPF object {object}.bpf.o: {source}")]
    Load { object: &'static str, source: EbpfError },
    #[error("eBPF program {program}: {source}")]
    Program { program: &'static str, source: ProgramError },
    #[error("eBPF program {program} not found in {object}.bpf.o")]
    MissingProgram { object: &'static str, program: &'static str },
    #[error("eBPF map {map} not found in {object}.bpf.o")]
    MissingMap { object: &'static str, map: &'static str },
    #[error("eBPF map {map}: {source}")]
    Map { map: &'static str, source: MapError },
    #[error("tracefs is not mounted at /sys/kernel/tracing (or not readable) and mounting it failed: {0}")]
    Tracefs(#[source] io::Error),
}

impl ProbeError {
    /// True if the root cause is EPERM / EACCES (not root, no CAP_BPF + CAP_PERFMON).
    pub fn is_permission_denied(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                if io.kind() == io::ErrorKind::PermissionDenied || io.raw_os_error() == Some(libc::EPERM) {
                    return true;
                }
            }
            cur = e.source();
        }
        false
    }
}

/// One loaded object: its programs stay attached while this lives.
pub struct Probe {
    object: &'static str,
    ebpf: Ebpf,
    config: Array<MapData, u64>,
    state: Array<MapData, u64>,
}

fn ensure_tracefs() -> Result<(), ProbeError> {
    let events = std::path::Path::new("/sys/kernel/tracing/events");
    if events.exists() || std::path::Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(ProbeError::Tracefs(io::Error::from(io::ErrorKind::PermissionDenied)));
    }
    nix::mount::mount(Some("tracefs"), "/sys/kernel/tracing", Some("tracefs"), nix::mount::MsFlags::empty(), None::<&str>)
        .map_err(|e| ProbeError::Tracefs(io::Error::from(e)))
}

impl Probe {
    /// Load `bytes`, attach each `(program, category, tracepoint)`, take the shared maps.
    fn load(object: &'static str, bytes: &[u8], attach: &[(&'static str, &str, &str)]) -> Result<Probe, ProbeError> {
        ensure_tracefs()?;
        let mut ebpf = EbpfLoader::new().load(bytes).map_err(|source| ProbeError::Load { object, source })?;
        for &(program, category, name) in attach {
            let prog: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or(ProbeError::MissingProgram { object, program })?
                .try_into()
                .map_err(|source| ProbeError::Program { program, source })?;
            prog.load().map_err(|source| ProbeError::Program { program, source })?;
            prog.attach(category, name).map_err(|source| ProbeError::Program { program, source })?;
        }
        let config = take_array(&mut ebpf, object, "mon_config")?;
        let state = take_array(&mut ebpf, object, "mon_state")?;
        Ok(Probe { object, ebpf, config, state })
    }

    pub fn set_config(&mut self, idx: u32, value: u64) -> Result<(), ProbeError> {
        self.config.set(idx, value, 0).map_err(|source| ProbeError::Map { map: "mon_config", source })
    }

    pub fn set_state(&mut self, idx: u32, value: u64) -> Result<(), ProbeError> {
        self.state.set(idx, value, 0).map_err(|source| ProbeError::Map { map: "mon_state", source })
    }

    pub fn state(&self, idx: u32) -> Result<u64, ProbeError> {
        self.state.get(&idx, 0).map_err(|source| ProbeError::Map { map: "mon_state", source })
    }

    /// The object's `events` ring buffer (call once).
    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let object = self.object;
        let map = self.ebpf.take_map("events").ok_or(ProbeError::MissingMap { object, map: "events" })?;
        RingBuf::try_from(map).map_err(|source| ProbeError::Map { map: "events", source })
    }

    /// Trigger level, clear level, min gap between triggers, sample period.
    pub fn configure(&mut self, trigger: u64, clear: u64, min_gap_ns: u64, sample_ns: u64) -> Result<(), ProbeError> {
        self.set_config(CFG_CLEAR, clear)?;
        self.set_config(CFG_MIN_GAP_NS, min_gap_ns)?;
        self.set_config(CFG_SAMPLE_NS, sample_ns)?;
        self.set_config(CFG_TRIGGER, trigger)
    }
}

fn take_array(ebpf: &mut Ebpf, object: &'static str, map: &'static str) -> Result<Array<MapData, u64>, ProbeError> {
    let m = ebpf.take_map(map).ok_or(ProbeError::MissingMap { object, map })?;
    Array::try_from(m).map_err(|source| ProbeError::Map { map, source })
}

/// One file's share of the page cache (pages added minus removed since load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileShare {
    pub dev: u32,
    pub ino: u64,
    pub pages: i64,
}

/// page_cache.bpf.o: global page count + per-file contributors.
pub struct PageCacheProbe {
    pub probe: Probe,
    files: HashMap<MapData, [u64; 2], i64>,
    skip_devs: HashMap<MapData, u32, u8>,
}

impl PageCacheProbe {
    pub fn load() -> Result<Self, ProbeError> {
        let mut probe = Probe::load(
            "page_cache",
            PAGE_CACHE_OBJ,
            &[
                ("page_cache_add", "filemap", "mm_filemap_add_to_page_cache"),
                ("page_cache_delete", "filemap", "mm_filemap_delete_from_page_cache"),
            ],
        )?;
        let m = probe.ebpf.take_map("files").ok_or(ProbeError::MissingMap { object: "page_cache", map: "files" })?;
        let files = HashMap::try_from(m).map_err(|source| ProbeError::Map { map: "files", source })?;
        let m = probe
            .ebpf
            .take_map("skip_devs")
            .ok_or(ProbeError::MissingMap { object: "page_cache", map: "skip_devs" })?;
        let skip_devs = HashMap::try_from(m).map_err(|source| ProbeError::Map { map: "skip_devs", source })?;
        Ok(PageCacheProbe { probe, files, skip_devs })
    }

    /// Pages counted since load (signed).
    pub fn delta(&self) -> Result<i64, ProbeError> {
        Ok(self.probe.state(ST_DELTA)? as i64)
    }

    /// The in-kernel page count: seed + delta.
    pub fn pages(&self) -> Result<i64, ProbeError> {
        Ok(self.probe.state(ST_BASE)? as i64 + self.delta()?)
    }

    /// Make the count read `pages` now; returns the count before (for drift).
    pub fn seed(&mut self, pages: i64) -> Result<i64, ProbeError> {
        let before = self.pages()?;
        let delta = self.delta()?;
        self.probe.set_state(ST_BASE, (pages - delta) as u64)?;
        Ok(before)
    }

    /// Ignore page-cache events on these kernel `dev_t`s (shmem devices), adding to the set.
    pub fn skip_devs(&mut self, devs: &[u32]) -> Result<(), ProbeError> {
        for d in devs {
            self.skip_devs.insert(d, 1u8, 0).map_err(|source| ProbeError::Map { map: "skip_devs", source })?;
        }
        Ok(())
    }

    /// The `n` files that added the most pages since load.
    pub fn top_files(&self, n: usize) -> Vec<FileShare> {
        let mut v: Vec<FileShare> = self
            .files
            .iter()
            .filter_map(Result::ok)
            .map(|(k, pages)| FileShare { ino: k[0], dev: k[1] as u32, pages })
            .filter(|f| f.pages > 0)
            .collect();
        v.sort_by_key(|f| std::cmp::Reverse(f.pages));
        v.truncate(n);
        v
    }
}

pub fn load_thermal() -> Result<Probe, ProbeError> {
    Probe::load("thermal", THERMAL_OBJ, &[("thermal_temperature", "thermal", "thermal_temperature")])
}

pub fn load_reclaim() -> Result<Probe, ProbeError> {
    Probe::load(
        "reclaim",
        RECLAIM_OBJ,
        &[
            ("direct_reclaim_begin", "vmscan", "mm_vmscan_direct_reclaim_begin"),
            ("direct_reclaim_end", "vmscan", "mm_vmscan_direct_reclaim_end"),
            ("memcg_reclaim_begin", "vmscan", "mm_vmscan_memcg_reclaim_begin"),
            ("memcg_reclaim_end", "vmscan", "mm_vmscan_memcg_reclaim_end"),
        ],
    )
}

//! The process image the analysis works on: code regions (bytes to decode), loaded
//! objects with their load bias and symbols, and a reader for live memory.
//!
//! Built from /proc after the target runs again; the analysis (path.rs, scan.rs) sees
//! only this model and a [`Memory`] callback, never a pid.

use crate::elf::ElfInfo;
use crate::procfs::{Mapping, Proc, ProcMem};
use memmap2::Mmap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Reads the target's memory. Returns how many bytes were read.
pub trait Memory: Sync {
    fn read(&self, addr: u64, buf: &mut [u8]) -> usize;

    fn read_u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        (self.read(addr, &mut b) == 8).then(|| u64::from_le_bytes(b))
    }
    fn read_i32(&self, addr: u64) -> Option<i32> {
        let mut b = [0u8; 4];
        (self.read(addr, &mut b) == 4).then(|| i32::from_le_bytes(b))
    }
}

/// Page-cached reader over /proc/PID/mem (many small GOT and jump-table reads).
pub struct CachedMem {
    mem: ProcMem,
    pages: Mutex<HashMap<u64, Option<Arc<[u8; 4096]>>>>,
}

impl CachedMem {
    pub fn new(mem: ProcMem) -> CachedMem {
        CachedMem { mem, pages: Mutex::new(HashMap::new()) }
    }
    fn page(&self, base: u64) -> Option<Arc<[u8; 4096]>> {
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        pages
            .entry(base)
            .or_insert_with(|| {
                let mut buf = [0u8; 4096];
                (self.mem.read(base, &mut buf) == 4096).then(|| Arc::new(buf))
            })
            .clone()
    }
    /// Bulk read, bypassing the page cache.
    pub fn read_bulk(&self, addr: u64, buf: &mut [u8]) -> usize {
        self.mem.read(addr, buf)
    }
}

impl Memory for CachedMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            let a = addr.wrapping_add(done as u64);
            let base = a & !0xfff;
            let Some(p) = self.page(base) else { break };
            let off = (a - base) as usize;
            let n = (4096 - off).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&p[off..off + n]);
            done += n;
        }
        done
    }
}

/// A loaded ELF object.
pub struct Object {
    pub path: String,
    pub bias: u64,
    pub info: ElfInfo,
    pub is_main: bool,
    file: Option<Arc<Mmap>>,
}

impl Object {
    pub fn symbolize(&self, addr: u64) -> Option<String> {
        let (name, off) = self.info.symbolize(addr.wrapping_sub(self.bias))?;
        Some(if off == 0 { name } else { format!("{name}+{off:#x}") })
    }
}

enum Bytes {
    File { map: Arc<Mmap>, off: usize, len: usize },
    Owned(Vec<u8>),
}

/// A range of executable bytes: an executable section of an object, or an anonymous
/// executable mapping (JIT code, the vDSO).
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub object: Option<usize>,
    /// Human name: section name or mapping name.
    pub name: String,
    bytes: Bytes,
}

impl Region {
    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::File { map, off, len } => &map[*off..*off + *len],
            Bytes::Owned(v) => v,
        }
    }
    pub fn contains(&self, addr: u64) -> bool {
        (self.start..self.end).contains(&addr)
    }
}

pub struct Image {
    /// Memory whose contents cannot change any more (see guards.rs).
    pub frozen: crate::guards::Frozen,
    pub objects: Vec<Object>,
    /// Sorted by start, non-overlapping.
    pub regions: Vec<Region>,
    pub exe: Option<String>,
    pub warnings: Vec<String>,
}

impl Image {
    /// Builds the image of a process from its maps. Objects that cannot be read or
    /// parsed become warnings, and their executable mappings are read from live memory.
    pub fn load(proc: &Proc, maps: &[Mapping], mem: &CachedMem) -> Image {
        let exe = proc.exe();
        let mut objects: Vec<Object> = Vec::new();
        let mut regions = Vec::new();
        let mut warnings = Vec::new();
        let mut by_inode: HashMap<(String, u64), usize> = HashMap::new();
        for m in maps.iter().filter(|m| m.exec) {
            if m.is_file() {
                let path = m.path.clone().unwrap_or_default();
                let key = (path.clone(), m.inode);
                let idx = match by_inode.get(&key) {
                    Some(&i) => Some(i),
                    None => match load_object(proc, m, maps) {
                        Ok(o) => {
                            let mut o = o;
                            o.is_main = exe.as_deref() == Some(path.as_str())
                                || (m.deleted && exe.as_deref().is_some_and(|e| e.starts_with(&path)));
                            objects.push(o);
                            by_inode.insert(key, objects.len() - 1);
                            Some(objects.len() - 1)
                        }
                        Err(e) => {
                            warnings.push(format!("{path}: {e}; decoding its code from live memory without symbols"));
                            None
                        }
                    },
                };
                match idx {
                    Some(i) => {
                        let o = &objects[i];
                        for s in &o.info.exec_sections {
                            let (start, end) = (s.addr.wrapping_add(o.bias), s.addr.wrapping_add(o.bias).saturating_add(s.size));
                            // Clip to this mapping; sections spanning several mappings are
                            // emitted once per mapping piece.
                            let (cs, ce) = (start.max(m.start), end.min(m.end));
                            if cs >= ce || regions.iter().any(|r: &Region| r.start == cs) {
                                continue;
                            }
                            let file = o.file.clone().expect("object has its file");
                            let off = s.offset.saturating_add(cs - start) as usize;
                            let len = ((ce - cs) as usize).min(file.len().saturating_sub(off));
                            regions.push(Region {
                                start: cs,
                                end: cs + len as u64,
                                object: Some(i),
                                name: s.name.clone(),
                                bytes: Bytes::File { map: file, off, len },
                            });
                        }
                    }
                    None => regions.push(live_region(m, mem, m.path.clone().unwrap_or_default())),
                }
            } else if !matches!(m.path.as_deref(), Some("[vsyscall]") | Some("[vdso]")) {
                // The vDSO belongs to the running kernel (patched for this CPU at boot):
                // on a destination the process runs that host's vDSO, so it is not
                // part of the workload.
                let name = m.path.clone().unwrap_or_else(|| "[anon:exec]".into());
                regions.push(live_region(m, mem, name));
            }
        }
        regions.retain(|r| r.end > r.start);
        regions.sort_by_key(|r| r.start);
        let mut image = Image { frozen: Default::default(), objects, regions, exe, warnings };
        // Read-only now (RELRO'd data, .rodata, code) or a known capability variable.
        let mut frozen: Vec<(u64, u64)> = maps.iter().filter(|m| m.read && !m.write).map(|m| (m.start, m.end)).collect();
        for (i, o) in image.objects.iter().enumerate() {
            let mut caps: Vec<(u64, u64)> = o.info.cap_symbols.iter().map(|&(a, sz)| (a.wrapping_add(o.bias), sz)).collect();
            if caps.is_empty() {
                caps.extend(crate::guards::openssl_cap_vector(&image, i, mem));
            }
            frozen.extend(caps.into_iter().map(|(a, sz)| (a, a.saturating_add(sz))));
        }
        image.frozen = crate::guards::Frozen::new(frozen);
        image
    }

    /// An image of ELF files on disk (not running): each file's executable sections at
    /// their link-time addresses, files placed apart so addresses never overlap.
    pub fn from_files(paths: &[std::path::PathBuf]) -> Result<Image, String> {
        let mut objects = Vec::new();
        let mut regions = Vec::new();
        let mut base = 0u64;
        for (i, p) in paths.iter().enumerate() {
            let f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let map = crate::sys::mmap::map_readonly(&f).map_err(|e| format!("{}: {e}", p.display()))?;
            let mut info = ElfInfo::parse(&map).map_err(|e| format!("{}: {e}", p.display()))?;
            add_debug_symbols(&mut info);
            let map = Arc::new(map);
            let lo = info.exec_sections.iter().map(|s| s.addr).min().unwrap_or(0);
            let hi = info.exec_sections.iter().map(|s| s.addr.saturating_add(s.size)).max().unwrap_or(0);
            // Place each file after the previous one (ET_EXEC files keep their addresses
            // when they fit).
            let bias = if lo >= base { 0 } else { (base - lo + 0xfff) & !0xfff };
            for s in &info.exec_sections {
                let off = s.offset as usize;
                let len = (s.size as usize).min(map.len().saturating_sub(off));
                regions.push(Region {
                    start: s.addr.wrapping_add(bias),
                    end: s.addr.wrapping_add(bias).wrapping_add(len as u64),
                    object: Some(i),
                    name: s.name.clone(),
                    bytes: Bytes::File { map: map.clone(), off, len },
                });
            }
            base = hi.saturating_add(bias).saturating_add(0x1000);
            objects.push(Object { path: p.display().to_string(), bias, info, is_main: i == 0, file: Some(map) });
        }
        regions.retain(|r| r.end > r.start);
        regions.sort_by_key(|r| r.start);
        Ok(Image { frozen: Default::default(), objects, regions, exe: None, warnings: Vec::new() })
    }

    /// Index of the region containing `addr`.
    pub fn region_of(&self, addr: u64) -> Option<usize> {
        let i = self.regions.partition_point(|r| r.start <= addr);
        (i > 0 && self.regions[i - 1].contains(addr)).then(|| i - 1)
    }

    pub fn object_of(&self, addr: u64) -> Option<&Object> {
        self.region_of(addr).and_then(|r| self.regions[r].object).map(|o| &self.objects[o])
    }

    /// `symbol+off` for an address, if known.
    pub fn symbolize(&self, addr: u64) -> Option<String> {
        self.object_of(addr)?.symbolize(addr)
    }

    /// Object path or mapping name for an address.
    pub fn object_name(&self, addr: u64) -> String {
        match self.region_of(addr) {
            Some(r) => match self.regions[r].object {
                Some(o) => self.objects[o].path.clone(),
                None => self.regions[r].name.clone(),
            },
            None => String::new(),
        }
    }

    pub fn code_bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.end - r.start).sum()
    }
}

fn live_region(m: &Mapping, mem: &CachedMem, name: String) -> Region {
    let mut v = vec![0u8; (m.end - m.start) as usize];
    let n = mem.read_bulk(m.start, &mut v);
    v.truncate(n);
    Region { start: m.start, end: m.start + n as u64, object: None, name, bytes: Bytes::Owned(v) }
}

/// A stripped object's symbols from its separate debug file, when one with the same build
/// id is installed (Debian's libc6-dbg, *-dbgsym packages). Missing or unreadable: nothing.
fn add_debug_symbols(info: &mut ElfInfo) {
    if info.has_symtab {
        return;
    }
    let Some(path) = info.debug_file_path() else { return };
    let Ok(f) = std::fs::File::open(&path) else { return };
    if let Ok(map) = crate::sys::mmap::map_readonly(&f) {
        let _ = info.add_debug_symbols(&map);
    }
}

fn load_object(proc: &Proc, m: &Mapping, _maps: &[Mapping]) -> Result<Object, String> {
    let f = proc.open_mapped(m).map_err(|e| e.to_string())?;

    let map = crate::sys::mmap::map_readonly(&f).map_err(|e| e.to_string())?;
    let mut info = ElfInfo::parse(&map).map_err(|e| e.to_string())?;
    add_debug_symbols(&mut info);
    let bias = info.bias_for(m.start, m.offset).ok_or("mapping matches no PT_LOAD segment")?;
    Ok(Object { path: m.path.clone().unwrap_or_default(), bias, info, is_main: false, file: Some(Arc::new(map)) })
}

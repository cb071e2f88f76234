//! What the analysis needs from an ELF object, in the object's own (unrelocated) addresses.

use goblin::elf::{header, program_header as ph, section_header as sh, sym, Elf};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("not a valid ELF file: {0}")]
    Parse(String),
    #[error("32-bit ELF object: only x86-64 processes are supported")]
    Class32,
    #[error("ELF object for another machine (e_machine {0}): only x86-64 is supported")]
    Machine(u16),
}

/// A section or segment range: `[addr, addr+size)` in object addresses, at `offset` in the file.
#[derive(Debug, Clone)]
pub struct Range {
    pub name: String,
    pub addr: u64,
    pub size: u64,
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct Load {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub exec: bool,
}

#[derive(Debug, Clone)]
pub struct Symbol {
    pub addr: u64,
    pub size: u64,
    pub name: String,
}

#[derive(Debug, Default)]
pub struct ElfInfo {
    /// ET_EXEC (absolute addresses, no load bias).
    pub is_exec_type: bool,
    pub entry: u64,
    pub loads: Vec<Load>,
    /// Sections with SHF_EXECINSTR (or executable segments when there are no sections).
    pub exec_sections: Vec<Range>,
    /// Allocated data whose words may point at code (function-pointer tables, vtables).
    pub data_sections: Vec<Range>,
    /// `.plt`, `.plt.sec`, `.plt.got`.
    pub plt_sections: Vec<Range>,
    /// `.preinit_array`, `.init_array`, `.fini_array`.
    pub init_arrays: Vec<Range>,
    /// Functions and code labels, sorted by address.
    pub symbols: Vec<Symbol>,
    pub main: Option<u64>,
    /// GOT slot address → symbol name, from JUMP_SLOT / GLOB_DAT relocations.
    pub got_slots: HashMap<u64, String>,
    /// Defined dynamic symbols: name → (address, is IFUNC).
    pub exports: HashMap<String, (u64, bool)>,
    /// DT_BIND_NOW / DF_BIND_NOW / DF_1_NOW.
    pub bind_now: bool,
    pub has_symtab: bool,
    /// Function start addresses from symbols and the `.eh_frame_hdr` search table
    /// (present even in stripped objects), sorted and deduplicated.
    pub func_starts: Vec<u64>,
    /// DT_NEEDED entries.
    pub needed: Vec<String>,
    pub soname: Option<String>,
    /// Known CPU-capability variables defined here (address, size): set once at startup
    /// from CPUID, then only read (see guards.rs).
    pub cap_symbols: Vec<(u64, u64)>,
    /// Functions and variables named in guards.rs's gate table (address, size).
    pub gate_symbols: HashMap<&'static str, (u64, u64)>,
    /// NT_GNU_BUILD_ID.
    pub build_id: Option<Vec<u8>>,
    /// R_X86_64_IRELATIVE relocations: IFUNC resolver → the GOT slot the dynamic linker
    /// filled with its result at load time (applied even under lazy binding).
    pub irelative: HashMap<u64, u64>,
}

/// Variables that hold CPU capability bits computed once at startup.
pub const CAPABILITY_SYMBOLS: &[&str] =
    &["OPENSSL_ia32cap_P", "__cpu_model", "__cpu_features2", "_dl_x86_cpu_features", "npy__cpu_have", "__pthread_force_elision"];

const SKIP_DATA: &[&str] = &[
    ".got", ".got.plt", ".dynamic", ".eh_frame", ".eh_frame_hdr", ".gcc_except_table", ".dynsym", ".dynstr",
    ".interp", ".gnu.hash", ".hash", ".tdata", ".tbss", ".note.gnu.property", ".note.gnu.build-id", ".note.ABI-tag",
    ".init_array", ".fini_array", ".preinit_array", ".comment",
];

impl ElfInfo {
    pub fn parse(bytes: &[u8]) -> Result<ElfInfo, ElfError> {
        let elf = Elf::parse(bytes).map_err(|e| ElfError::Parse(e.to_string()))?;
        if !elf.is_64 {
            return Err(ElfError::Class32);
        }
        if elf.header.e_machine != header::EM_X86_64 {
            return Err(ElfError::Machine(elf.header.e_machine));
        }
        let mut info = ElfInfo {
            is_exec_type: elf.header.e_type == header::ET_EXEC,
            entry: elf.entry,
            needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
            soname: elf.soname.map(str::to_string),
            ..Default::default()
        };
        for p in elf.program_headers.iter().filter(|p| p.p_type == ph::PT_LOAD) {
            info.loads.push(Load {
                vaddr: p.p_vaddr,
                memsz: p.p_memsz,
                offset: p.p_offset,
                filesz: p.p_filesz,
                exec: p.p_flags & ph::PF_X != 0,
            });
        }
        let file_len = bytes.len() as u64;
        for s in &elf.section_headers {
            if s.sh_flags & u64::from(sh::SHF_ALLOC) == 0 || s.sh_size == 0 {
                continue;
            }
            let name = elf.shdr_strtab.get_at(s.sh_name).unwrap_or("").to_string();
            let r = Range { name: name.clone(), addr: s.sh_addr, size: s.sh_size, offset: s.sh_offset };
            let in_file = s.sh_type != sh::SHT_NOBITS && s.sh_offset.saturating_add(s.sh_size) <= file_len;
            if s.sh_flags & u64::from(sh::SHF_EXECINSTR) != 0 {
                if in_file {
                    if name.starts_with(".plt") {
                        info.plt_sections.push(r.clone());
                    }
                    info.exec_sections.push(r);
                }
            } else if matches!(name.as_str(), ".init_array" | ".fini_array" | ".preinit_array") {
                info.init_arrays.push(r);
            } else if !SKIP_DATA.contains(&name.as_str())
                && !name.starts_with(".rela")
                && !name.starts_with(".rel.")
                && !name.starts_with(".note")
                && !name.starts_with(".gnu.version")
                && (info.is_exec_type || !name.starts_with(".rodata"))
            {
                info.data_sections.push(r);
            }
        }
        if info.exec_sections.is_empty() {
            // No section headers (stripped of them): fall back to segments.
            for l in &info.loads {
                let r = Range { name: String::new(), addr: l.vaddr, size: l.filesz, offset: l.offset };
                if l.exec {
                    info.exec_sections.push(r);
                } else {
                    info.data_sections.push(Range { size: l.memsz, ..r });
                }
            }
        }
        // Symbols: .symtab when present, else .dynsym.
        info.has_symtab = !elf.syms.is_empty();
        info.add_symbols(&elf, true);
        info.build_id = build_id(&elf, bytes);
        for s in &elf.section_headers {
            if elf.shdr_strtab.get_at(s.sh_name) == Some(".eh_frame_hdr") && s.sh_type != sh::SHT_NOBITS {
                let (o, n) = (s.sh_offset as usize, s.sh_size as usize);
                if let Some(hdr) = bytes.get(o..o.saturating_add(n)) {
                    info.func_starts.extend(eh_frame_hdr_starts(hdr, s.sh_addr));
                }
            }
        }
        info.finish_symbols();
        for s in elf.dynsyms.iter() {
            if s.st_shndx == 0 || s.st_value == 0 {
                continue;
            }
            let ty = s.st_type();
            if ty != sym::STT_FUNC && ty != sym::STT_GNU_IFUNC {
                continue;
            }
            if let Some(name) = elf.dynstrtab.get_at(s.st_name) {
                info.exports.entry(name.to_string()).or_insert((s.st_value, ty == sym::STT_GNU_IFUNC));
            }
        }
        use goblin::elf::reloc::{R_X86_64_GLOB_DAT, R_X86_64_IRELATIVE, R_X86_64_JUMP_SLOT};
        for r in elf.pltrelocs.iter().chain(elf.dynrelas.iter()) {
            if r.r_type == R_X86_64_IRELATIVE {
                if let Some(a) = r.r_addend {
                    info.irelative.entry(a as u64).or_insert(r.r_offset);
                }
                continue;
            }
            if r.r_type != R_X86_64_JUMP_SLOT && r.r_type != R_X86_64_GLOB_DAT {
                continue;
            }
            if let Some(name) = elf.dynsyms.get(r.r_sym).and_then(|s| elf.dynstrtab.get_at(s.st_name)) {
                info.got_slots.insert(r.r_offset, name.to_string());
            }
        }
        if let Some(d) = &elf.dynamic {
            use goblin::elf::dynamic::{DF_1_NOW, DF_BIND_NOW, DT_BIND_NOW, DT_FLAGS, DT_FLAGS_1};
            info.bind_now = d.dyns.iter().any(|e| {
                e.d_tag == DT_BIND_NOW
                    || (e.d_tag == DT_FLAGS && e.d_val & DF_BIND_NOW != 0)
                    || (e.d_tag == DT_FLAGS_1 && e.d_val & DF_1_NOW != 0)
            });
        }
        Ok(info)
    }

    /// Adds the function and named-variable symbols of `elf` (`.symtab`, and `.dynsym`
    /// when `dynamic`).
    fn add_symbols(&mut self, elf: &Elf, dynamic: bool) {
        let mut seen: std::collections::HashSet<(u64, String)> =
            self.symbols.iter().map(|s| (s.addr, s.name.clone())).collect();
        let tabs = [(&elf.syms, &elf.strtab), (&elf.dynsyms, &elf.dynstrtab)];
        for (tab, strtab) in tabs.into_iter().take(if dynamic { 2 } else { 1 }) {
            for s in tab.iter() {
                let ty = s.st_type();
                if ty == sym::STT_OBJECT && s.st_value != 0 && s.st_size != 0 {
                    if let Some(name) = strtab.get_at(s.st_name) {
                        if CAPABILITY_SYMBOLS.contains(&name) && !self.cap_symbols.contains(&(s.st_value, s.st_size)) {
                            self.cap_symbols.push((s.st_value, s.st_size));
                        }
                        if let Some(&n) = crate::guards::GATE_NAMES.iter().find(|&&n| n == name) {
                            self.gate_symbols.entry(n).or_insert((s.st_value, s.st_size));
                        }
                    }
                }
                if s.st_value == 0 || s.st_shndx == 0 || !(ty == sym::STT_FUNC || ty == sym::STT_GNU_IFUNC || ty == sym::STT_NOTYPE) {
                    continue;
                }
                let Some(name) = strtab.get_at(s.st_name) else { continue };
                if name.is_empty() || name.starts_with("$") {
                    continue;
                }
                if name == "main" && ty == sym::STT_FUNC {
                    self.main = Some(s.st_value);
                }
                if let Some(&n) = crate::guards::GATE_NAMES.iter().find(|&&n| n == name) {
                    self.gate_symbols.entry(n).or_insert((s.st_value, s.st_size));
                }
                if seen.insert((s.st_value, name.to_string())) {
                    self.symbols.push(Symbol { addr: s.st_value, size: s.st_size, name: name.to_string() });
                }
            }
        }
    }

    /// Sorts the symbols and merges their starts into `func_starts`.
    fn finish_symbols(&mut self) {
        self.symbols.sort_by(|a, b| a.addr.cmp(&b.addr).then(b.size.cmp(&a.size)));
        self.func_starts.extend(self.symbols.iter().filter(|s| s.size > 0).map(|s| s.addr));
        self.func_starts.sort_unstable();
        self.func_starts.dedup();
    }

    /// Merges the `.symtab` of a separate debug file (`/usr/lib/debug/.build-id/…`, e.g.
    /// Debian's libc6-dbg) into a stripped object's symbols: local functions and
    /// variables (`__pthread_force_elision`, …) get names. The caller matched the file by
    /// build id. Returns how many symbols were added.
    pub fn add_debug_symbols(&mut self, bytes: &[u8]) -> Result<usize, ElfError> {
        let elf = Elf::parse(bytes).map_err(|e| ElfError::Parse(e.to_string()))?;
        if build_id(&elf, bytes) != self.build_id {
            return Err(ElfError::Parse("debug file has another build id".into()));
        }
        let before = self.symbols.len();
        self.add_symbols(&elf, false);
        self.has_symtab |= !elf.syms.is_empty();
        self.finish_symbols();
        Ok(self.symbols.len() - before)
    }

    /// Where a separate debug file for this object would be, by build id.
    pub fn debug_file_path(&self) -> Option<std::path::PathBuf> {
        let id = self.build_id.as_ref().filter(|id| id.len() > 1)?;
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        Some(std::path::PathBuf::from(format!("/usr/lib/debug/.build-id/{}/{}.debug", &hex[..2], &hex[2..])))
    }

    /// Load bias of an object whose bytes at file `offset` are mapped at `start`.
    pub fn bias_for(&self, start: u64, offset: u64) -> Option<u64> {
        if self.is_exec_type {
            return Some(0);
        }
        let l = self.loads.iter().find(|l| {
            let page_off = l.offset & !0xfff;
            offset >= page_off && offset < l.offset.saturating_add(l.filesz.max(1))
        })?;
        Some(start.wrapping_sub(offset).wrapping_sub(l.vaddr.wrapping_sub(l.offset)))
    }

    /// The symbol containing `addr` (object address), as `name+0xoff`.
    pub fn symbolize(&self, addr: u64) -> Option<(String, u64)> {
        let i = self.symbols.partition_point(|s| s.addr <= addr);
        // Walk back over a few candidates: sized symbols must contain addr; unsized
        // ones (asm labels) are taken as the nearest preceding name.
        self.symbols[..i]
            .iter()
            .rev()
            .take(8)
            .find(|s| s.size == 0 || addr < s.addr.saturating_add(s.size))
            .map(|s| (s.name.clone(), addr - s.addr))
    }

    /// Whether `addr` (object address) starts a function (symbol or FDE).
    pub fn is_function_start(&self, addr: u64) -> bool {
        self.func_starts.binary_search(&addr).is_ok()
    }
}

fn build_id(elf: &Elf, bytes: &[u8]) -> Option<Vec<u8>> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let notes = elf.iter_note_sections(bytes, Some(".note.gnu.build-id")).or_else(|| elf.iter_note_headers(bytes))?;
    notes.flatten().find(|n| n.n_type == NT_GNU_BUILD_ID && n.name == "GNU").map(|n| n.desc.to_vec())
}

/// Function start addresses from an `.eh_frame_hdr` binary-search table (the common
/// encoding: `fde_count` udata4, table entries datarel sdata4). Other encodings: none.
fn eh_frame_hdr_starts(hdr: &[u8], hdr_addr: u64) -> Vec<u64> {
    const UDATA4: u8 = 0x03;
    const DATAREL_SDATA4: u8 = 0x3b;
    if hdr.len() < 12 || hdr[0] != 1 || hdr[2] != UDATA4 || hdr[3] != DATAREL_SDATA4 {
        return Vec::new();
    }
    // eh_frame_ptr: 4 bytes for the usual pcrel|sdata4 encoding.
    if hdr[1] & 0x0f != 0x0b {
        return Vec::new();
    }
    let count = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
    let table = &hdr[12..];
    let count = count.min(table.len() / 8);
    (0..count)
        .map(|i| {
            let e = &table[i * 8..i * 8 + 4];
            hdr_addr.wrapping_add(i32::from_le_bytes([e[0], e[1], e[2], e[3]]) as i64 as u64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_eh_frame_hdr_table() {
        // version 1, eh_frame_ptr pcrel|sdata4, count udata4, table datarel|sdata4
        let mut h = vec![1u8, 0x1b, 0x03, 0x3b];
        h.extend(0i32.to_le_bytes());
        h.extend(2u32.to_le_bytes());
        for (loc, fde) in [(-0x100i32, 0x40i32), (-0x80, 0x60)] {
            h.extend(loc.to_le_bytes());
            h.extend(fde.to_le_bytes());
        }
        assert_eq!(eh_frame_hdr_starts(&h, 0x2000), vec![0x1f00, 0x1f80]);
        h[3] = 0x1b; // unsupported table encoding
        assert!(eh_frame_hdr_starts(&h, 0x2000).is_empty());
    }

    #[test]
    fn rejects_non_elf_and_32_bit() {
        assert!(matches!(ElfInfo::parse(b"not an elf file at all, really"), Err(ElfError::Parse(_))));
        let mut e = vec![0u8; 64];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 1; // ELFCLASS32
        e[5] = 1;
        e[6] = 1;
        assert!(ElfInfo::parse(&e).is_err());
    }
}

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
}

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
        let mut seen = HashMap::new();
        info.has_symtab = !elf.syms.is_empty();
        for (tab, strtab) in [(&elf.syms, &elf.strtab), (&elf.dynsyms, &elf.dynstrtab)] {
            for s in tab.iter() {
                let ty = s.st_type();
                if s.st_value == 0 || s.st_shndx == 0 || !(ty == sym::STT_FUNC || ty == sym::STT_GNU_IFUNC || ty == sym::STT_NOTYPE) {
                    continue;
                }
                let Some(name) = strtab.get_at(s.st_name) else { continue };
                if name.is_empty() || name.starts_with("$") {
                    continue;
                }
                if name == "main" && ty == sym::STT_FUNC {
                    info.main = Some(s.st_value);
                }
                if seen.insert((s.st_value, name.to_string()), ()).is_none() {
                    info.symbols.push(Symbol { addr: s.st_value, size: s.st_size, name: name.to_string() });
                }
            }
        }
        info.symbols.sort_by(|a, b| a.addr.cmp(&b.addr).then(b.size.cmp(&a.size)));
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
        use goblin::elf::reloc::{R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT};
        for r in elf.pltrelocs.iter().chain(elf.dynrelas.iter()) {
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

    /// Load bias of an object whose bytes at file `offset` are mapped at `start`.
    pub fn bias_for(&self, start: u64, offset: u64) -> Option<u64> {
        if self.is_exec_type {
            return Some(0);
        }
        let l = self.loads.iter().find(|l| {
            let page_off = l.offset & !0xfff;
            offset >= page_off && offset < l.offset + l.filesz.max(1)
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
            .find(|s| s.size == 0 || addr < s.addr + s.size)
            .map(|s| (s.name.clone(), addr - s.addr))
    }

    /// Whether `addr` is the start of a known function symbol.
    pub fn is_symbol_start(&self, addr: u64) -> bool {
        let i = self.symbols.partition_point(|s| s.addr < addr);
        self.symbols.get(i).is_some_and(|s| s.addr == addr)
    }
}

//! Python-aware path tracking. CPython reaches the native code of extension modules
//! through tables in live memory (`PyMethodDef` arrays, type objects, numpy ufunc loop
//! arrays), never through a static path from `main`. This module finds which of those
//! entries the Python code of the process can name, and turns them into path-tracking
//! roots; the table words of entries it cannot name are left out of the data-word roots
//! of the extension modules, so path mode neither misses the extensions' hot code nor
//! reports everything they contain.
//!
//! What counts as "names the Python code can call": the identifiers (and string
//! literals) of the script (from /proc/PID/cmdline, or `-c` code) and of the `.py` files
//! of every package whose extension module is loaded, plus the stdlib wrapper module of
//! each `lib-dynload` extension (`_hashlib` → `hashlib.py`). A method `openssl_sha256`
//! matches a name `sha256` (a suffix after `_`), because wrappers build such names
//! (`getattr(_hashlib, 'openssl_' + name)`).
//!
//! Layouts read from live memory (CPython 3.8–3.13, 64-bit):
//! `PyMethodDef {char *ml_name; PyCFunction ml_meth; int ml_flags; char *ml_doc}` (32 bytes);
//! `PyTypeObject`: `tp_name` at +24, `tp_basicsize` +32, `tp_flags` +168 (`Py_TPFLAGS_READY`
//! once the type is in use), function slots between +48 and +400, sub-tables
//! (`tp_as_async` +80, `tp_as_number` +96, `tp_as_sequence` +104, `tp_as_mapping` +112,
//! `tp_as_buffer` +160); `PyType_Spec {name; int basicsize, itemsize; unsigned flags; PyType_Slot *slots}`;
//! numpy `PyUFuncObject`: `functions` at +32, `ntypes` +48, `name` +56 (numpy 1.x and 2.x).

use crate::analysis::Root;
use crate::image::{Image, Memory, Object};
use crate::procfs::Mapping;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Roots and skipped table words for path tracking, and what they came from.
#[derive(Debug, Default)]
pub struct PythonRoots {
    pub roots: Vec<Root>,
    /// Addresses of data words (table entries of functions the Python code cannot name)
    /// that path tracking must not use as roots.
    pub skip_words: HashSet<u64>,
    /// Objects whose exported functions are not roots: the extension modules (their
    /// Python-callable functions are in `roots`) and the libraries they need (reached
    /// through the extensions' PLT).
    pub skip_exports: HashSet<usize>,
    pub report: serde_json::Value,
}

/// How the process embeds CPython, if it does.
pub fn detect(image: &Image) -> Option<String> {
    for o in &image.objects {
        let file = o.path.rsplit('/').next().unwrap_or("");
        if file.starts_with("libpython3") {
            return Some(format!("libpython ({})", o.path));
        }
        if o.is_main && (o.info.exports.contains_key("_PyRuntime") || o.info.exports.contains_key("Py_Initialize")) {
            return Some(format!("statically linked interpreter ({})", o.path));
        }
    }
    None
}

struct Ext<'a> {
    idx: usize,
    obj: &'a Object,
    module: String,
}

/// Finds the Python-level roots of a CPython process. `heap` lists the anonymous
/// writable mappings (where numpy's ufunc objects live).
pub fn analyze<M: Memory>(
    pid: i32,
    image: &Image,
    mem: &M,
    bulk: &dyn Fn(u64, &mut [u8]) -> usize,
    maps: &[Mapping],
) -> Option<PythonRoots> {
    let t0 = Instant::now();
    let interp = detect(image)?;
    let exts: Vec<Ext> = image
        .objects
        .iter()
        .enumerate()
        .filter(|(_, o)| !o.is_main)
        .filter_map(|(idx, obj)| {
            let init = obj.info.exports.keys().find(|k| k.starts_with("PyInit_"))?;
            Some(Ext { idx, obj, module: module_name(&obj.path, &init["PyInit_".len()..]) })
        })
        .collect();

    let mut skip_exports: HashSet<usize> = exts.iter().map(|e| e.idx).collect();
    let mut work: Vec<usize> = skip_exports.iter().copied().collect();
    while let Some(i) = work.pop() {
        for need in &image.objects[i].info.needed {
            for (j, o) in image.objects.iter().enumerate() {
                let file = o.path.rsplit('/').next().unwrap_or("");
                if !o.is_main && (file == need || o.info.soname.as_deref() == Some(need.as_str())) && skip_exports.insert(j) {
                    work.push(j);
                }
            }
        }
    }

    // Names the Python code can use: from the script and the modules it imported
    // (sys.modules read from the live interpreter), else from whole packages.
    let (script, mut sources) = script_sources(pid);
    let imported = sys_modules(image, mem);
    let module_sources = imported.as_ref().map(|mods| module_files(mods, &exts, pid));
    match &module_sources {
        Some(files) if !files.is_empty() => sources.extend(files.iter().cloned()),
        _ => {
            for e in &exts {
                sources.extend(package_sources(&e.obj.path));
            }
        }
    }
    sources.sort();
    sources.dedup();
    let mut names: HashSet<String> = HashSet::new();
    let mut bytes_read = 0u64;
    for s in &sources {
        if let Ok(text) = std::fs::read(s) {
            bytes_read += text.len() as u64;
            identifiers(&text, &mut names);
        }
    }
    if let Some(code) = inline_code(pid) {
        identifiers(code.as_bytes(), &mut names);
    }
    let used = |n: &str| names.contains(n) || n.match_indices('_').any(|(i, _)| n.len() - i > 3 && names.contains(&n[i + 1..]));

    let mut out = PythonRoots::default();
    let mut modules = Vec::new();
    let mut root_lines: Vec<String> = Vec::new();
    let mut add_root = |out: &mut PythonRoots, addr: u64, why: String| {
        if out.roots.iter().any(|r| r.addr == addr) {
            return;
        }
        let sym = image.symbolize(addr).unwrap_or_else(|| format!("{addr:#x}"));
        let listed = !why.starts_with("type ");
        let why = format!("Python: {why} → {sym}");
        if listed && root_lines.len() < 2000 {
            root_lines.push(why.clone());
        }
        out.roots.push(Root { addr, why });
    };
    let code_of = |addr: u64, idx: usize| image.region_of(addr).is_some_and(|r| image.regions[r].object == Some(idx));
    for e in &exts {
        let data = read_data(e.obj, mem);
        let in_obj = |a: u64| e.obj.info.loads.iter().any(|l| (l.vaddr.wrapping_add(e.obj.bias)..l.vaddr.wrapping_add(e.obj.bias).wrapping_add(l.memsz)).contains(&a));
        let (mut methods, mut methods_used, mut types, mut types_used, mut slots_rooted) = (0, 0, 0, 0, 0);
        for (base, words) in &data {
            let word = |i: usize| words.get(i).copied().unwrap_or(0);
            for i in 0..words.len() {
                let at = base.wrapping_add(8 * i as u64);
                // PyMethodDef.
                let (name_p, meth, flags, doc) = (word(i), word(i + 1), word(i + 2), word(i + 3));
                if in_obj(name_p)
                    && code_of(meth, e.idx)
                    && flags & 0xffff_fc00 == 0
                    && (doc == 0 || in_obj(doc))
                {
                    if let Some(name) = c_string(mem, name_p).filter(|n| is_ident(n)) {
                        methods += 1;
                        if used(&name) {
                            methods_used += 1;
                            add_root(&mut out, meth, format!("{}.{name}", e.module));
                        } else {
                            out.skip_words.insert(at.wrapping_add(8));
                        }
                        continue;
                    }
                }
                // Static PyTypeObject (ob_refcnt, ob_type, ob_size, tp_name, ...).
                let (tp_name, basic, tp_flags) = (word(i + 3), word(i + 4), word(i + 21));
                if i + 50 < words.len()
                    && in_obj(tp_name)
                    && (16..1 << 20).contains(&basic)
                    && tp_flags < 1 << 32
                    && tp_flags & (1 << 12) != 0
                {
                    if let Some(tname) = c_string(mem, tp_name).filter(|n| is_dotted(n)) {
                        types += 1;
                        let short = tname.rsplit('.').next().unwrap_or(&tname).to_string();
                        if used(&short) {
                            types_used += 1;
                            let mut slots: Vec<u64> = (6..51).map(|k| word(i + k)).collect();
                            // tp_as_async (4 slots), tp_as_number (36), tp_as_sequence (10),
                            // tp_as_mapping (3), tp_as_buffer (2).
                            for (sub, n) in [(10usize, 4u64), (12, 36), (13, 10), (14, 3), (20, 2)] {
                                let p = word(i + sub);
                                if in_obj(p) {
                                    slots.extend((0..n).filter_map(|k| mem.read_u64(p.wrapping_add(8 * k))));
                                }
                            }
                            for s in slots.into_iter().filter(|&s| code_of(s, e.idx)) {
                                slots_rooted += 1;
                                add_root(&mut out, s, format!("type {tname} slot"));
                            }
                        }
                    }
                }
                // PyType_Spec (heap types): name, basicsize|itemsize, flags, slots.
                let (spec_name, slots_p) = (word(i), word(i + 3));
                if in_obj(spec_name) && in_obj(slots_p) && slots_p != at && word(i + 1) >> 32 < 1 << 20 && (word(i + 1) & 0xffff_ffff) < 1 << 20 {
                    if let Some(tname) = c_string(mem, spec_name).filter(|n| is_dotted(n) && n.contains('.')) {
                        let mut entries = Vec::new();
                        for k in 0..96u64 {
                            let (Some(id), Some(f)) = (mem.read_u64(slots_p.wrapping_add(16 * k)), mem.read_u64(slots_p.wrapping_add(16 * k + 8))) else { break };
                            let id = id & 0xffff_ffff;
                            if id == 0 || id > 100 {
                                break;
                            }
                            entries.push(f);
                        }
                        if !entries.is_empty() {
                            types += 1;
                            let short = tname.rsplit('.').next().unwrap_or(&tname).to_string();
                            if used(&short) {
                                types_used += 1;
                                for f in entries.into_iter().filter(|&f| code_of(f, e.idx)) {
                                    slots_rooted += 1;
                                    add_root(&mut out, f, format!("type {tname} slot"));
                                }
                            }
                        }
                    }
                }
            }
        }
        modules.push(serde_json::json!({
            "module": e.module, "path": e.obj.path,
            "methods": methods, "methods_rooted": methods_used,
            "types": types, "types_rooted": types_used, "type_slots_rooted": slots_rooted,
        }));
    }

    // numpy ufuncs: objects of type `numpy.ufunc` on the heap, their loop arrays.
    let mut ufuncs = (0u64, 0u64, 0u64);
    if let Some((ufunc_type, umath)) = find_type(image, &exts, mem, "numpy.ufunc") {
        let heap: Vec<(u64, u64)> = maps
            .iter()
            .filter(|m| m.read && m.write && !m.exec && (m.path.is_none() || m.path.as_deref() == Some("[heap]")))
            .map(|m| (m.start, m.end))
            .collect();
        for addr in scan_words(bulk, &heap, ufunc_type) {
            let obj = addr - 8;
            let (Some(funcs), Some(nt), Some(name_p)) = (mem.read_u64(obj.wrapping_add(32)), mem.read_i32(obj.wrapping_add(48)), mem.read_u64(obj.wrapping_add(56))) else {
                continue;
            };
            let Some(name) = c_string(mem, name_p).filter(|n| is_ident(n)) else { continue };
            if !(0..=1024).contains(&nt) {
                continue;
            }
            ufuncs.0 += 1;
            let is_used = used(&name);
            if is_used {
                ufuncs.1 += 1;
            }
            for k in 0..nt as u64 {
                let Some(f) = mem.read_u64(funcs.wrapping_add(8 * k)) else { break };
                if image.region_of(f).is_none() {
                    continue;
                }
                if is_used {
                    ufuncs.2 += 1;
                    add_root(&mut out, f, format!("{}.{name} (ufunc loop {k})", exts[umath].module));
                } else {
                    out.skip_words.insert(funcs.wrapping_add(8 * k));
                }
            }
        }
    }
    let mut by_module: BTreeMap<String, usize> = BTreeMap::new();
    for r in &out.roots {
        let m = r.why.trim_start_matches("Python: ").trim_start_matches("type ").split(['.', ' ']).next().unwrap_or("").to_string();
        *by_module.entry(m).or_default() += 1;
    }
    out.skip_exports = skip_exports;
    out.report = serde_json::json!({
        "objects_without_export_roots": out.skip_exports.iter().map(|&i| image.objects[i].path.rsplit('/').next().unwrap_or("").to_string()).collect::<Vec<_>>(),
        "interpreter": interp,
        "script": script,
        "sys_modules": imported.as_ref().map(|m| m.len()),
        "names_from": if module_sources.as_ref().is_some_and(|f| !f.is_empty()) { "script + sys.modules sources" } else { "script + whole packages of loaded extensions" },
        "sources_read": sources.len(),
        "source_bytes": bytes_read,
        "names": names.len(),
        "extension_modules": modules,
        "ufuncs": {"found": ufuncs.0, "rooted": ufuncs.1, "loops_rooted": ufuncs.2},
        "roots": out.roots.len(),
        "skipped_table_words": out.skip_words.len(),
        "roots_by_package": by_module,
        "root_list": root_lines,
        "type_slot_roots": out.roots.iter().filter(|r| r.why.starts_with("Python: type ")).count(),
        "analysis_ms": t0.elapsed().as_millis() as u64,
    });
    Some(out)
}

/// `numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so` → `numpy._core._multiarray_umath`.
fn module_name(path: &str, init: &str) -> String {
    let mut parts = vec![init.to_string()];
    let mut dir = Path::new(path).parent();
    while let Some(d) = dir {
        if !d.join("__init__.py").exists() {
            break;
        }
        parts.push(d.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default());
        dir = d.parent();
    }
    parts.reverse();
    parts.join(".")
}

/// The script (first non-option argument) and its source file.
fn script_sources(pid: i32) -> (Option<String>, Vec<PathBuf>) {
    let args = cmdline(pid);
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" | "-m" => return (None, Vec::new()),
            "-W" | "-X" | "-Q" => {
                it.next();
            }
            s if s.starts_with('-') => {}
            s => {
                let p = cwd.join(s);
                let root = format!("/proc/{pid}/root");
                let abs = if p.is_absolute() { PathBuf::from(format!("{root}{}", p.display())) } else { p.clone() };
                let path = if abs.exists() { abs } else { p };
                return (Some(s.to_string()), vec![path]);
            }
        }
    }
    (None, Vec::new())
}

fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// `python -c CODE`: the code.
fn inline_code(pid: i32) -> Option<String> {
    let args = cmdline(pid);
    let i = args.iter().position(|a| a == "-c")?;
    args.get(i + 1).cloned()
}

/// The `.py` files of the package an extension module belongs to (tests excluded), or
/// for a top-level extension (`lib-dynload/_hashlib…so`) its stdlib wrapper module.
fn package_sources(so: &str) -> Vec<PathBuf> {
    let so = Path::new(so);
    let Some(mut dir) = so.parent().map(Path::to_path_buf) else { return Vec::new() };
    if !dir.join("__init__.py").exists() {
        let stem = so.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let stem = stem.split('.').next().unwrap_or("").to_string();
        let stdlib = if dir.ends_with("lib-dynload") { dir.parent().map(Path::to_path_buf).unwrap_or_default() } else { dir };
        return [stem.clone(), stem.trim_start_matches('_').to_string()]
            .iter()
            .map(|s| stdlib.join(format!("{s}.py")))
            .filter(|p| p.exists())
            .collect();
    }
    while dir.parent().is_some_and(|p| p.join("__init__.py").exists()) {
        dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    let mut out = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if name != "tests" && name != "__pycache__" {
                    stack.push(p);
                }
            } else if name.ends_with(".py") || name.ends_with(".pyi") {
                out.push(p);
            }
        }
    }
    out
}

/// Every identifier-like word of a source file (names, attributes, string contents).
fn identifiers(text: &[u8], out: &mut HashSet<String>) {
    for w in text.split(|b| !(b.is_ascii_alphanumeric() || *b == b'_')) {
        if !w.is_empty() && !w[0].is_ascii_digit() && w.len() < 80 {
            if let Ok(s) = std::str::from_utf8(w) {
                if !out.contains(s) {
                    out.insert(s.to_string());
                }
            }
        }
    }
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.len() < 100 && !s.as_bytes()[0].is_ascii_digit() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_dotted(s: &str) -> bool {
    !s.is_empty() && s.len() < 200 && s.split('.').all(is_ident)
}

fn c_string<M: Memory>(mem: &M, addr: u64) -> Option<String> {
    let mut buf = [0u8; 128];
    let n = mem.read(addr, &mut buf);
    let end = buf[..n].iter().position(|&b| b == 0)?;
    std::str::from_utf8(&buf[..end]).ok().map(String::from)
}

/// The live words of an object's data sections, per section.
fn read_data<M: Memory>(o: &Object, mem: &M) -> Vec<(u64, Vec<u64>)> {
    o.info
        .data_sections
        .iter()
        .map(|s| {
            let base = s.addr.wrapping_add(o.bias) & !7;
            // Sizes come from the file's section headers: bounded, whatever they say.
            let mut buf = vec![0u8; (s.size as usize).min(256 << 20) + 8];
            let n = mem.read(base, &mut buf);
            buf.truncate(n - n % 8);
            (base, buf.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
        })
        .collect()
}

/// The address of a static type object named `name` in one of the extensions, and
/// which extension holds it.
fn find_type<M: Memory>(image: &Image, exts: &[Ext], mem: &M, name: &str) -> Option<(u64, usize)> {
    let _ = image;
    for (k, e) in exts.iter().enumerate() {
        for (base, words) in read_data(e.obj, mem) {
            for i in 0..words.len().saturating_sub(22) {
                if (16..1 << 20).contains(&words[i + 4]) && words[i + 21] & (1 << 12) != 0 && words[i + 21] < 1 << 32 {
                    if c_string(mem, words[i + 3]).as_deref() == Some(name) {
                        return Some((base.wrapping_add(8 * i as u64), k));
                    }
                }
            }
        }
    }
    None
}

/// Addresses of 8-aligned words equal to `value` in the given ranges.
fn scan_words(read: &dyn Fn(u64, &mut [u8]) -> usize, ranges: &[(u64, u64)], value: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for &(s, e) in ranges {
        let mut a = s;
        while a < e {
            let n = ((e - a) as usize).min(buf.len());
            let got = read(a, &mut buf[..n]);
            for (j, c) in buf[..got - got % 8].chunks_exact(8).enumerate() {
                if u64::from_le_bytes(c.try_into().expect("8 bytes")) == value {
                    out.push(a.wrapping_add(8 * j as u64));
                }
            }
            if got < n {
                break;
            }
            a += n as u64;
        }
    }
    out
}

/// The names in `sys.modules`, read from the live interpreter: `_PyRuntime` points (within
/// its first 512 bytes) at the main interpreter state, which holds the modules dict — the
/// dict (its `ob_type` is `PyDict_Type`) whose keys include `sys` and `builtins`. Dict and
/// str layouts of CPython 3.11/3.12 (64-bit); `None` if anything does not match.
fn sys_modules<M: Memory>(image: &Image, mem: &M) -> Option<Vec<String>> {
    // `_PyRuntime` is a data symbol: ElfInfo keeps only exported functions, so read the
    // dynamic symbol table of the interpreter's object again.
    let o = image.objects.iter().find(|o| {
        o.path.rsplit('/').next().is_some_and(|f| f.starts_with("libpython3")) || (o.is_main && o.info.exports.contains_key("Py_Initialize"))
    })?;
    let bytes = std::fs::read(&o.path).ok()?;
    let elf = goblin::elf::Elf::parse(&bytes).ok()?;
    let runtime = elf
        .dynsyms
        .iter()
        .find(|s| s.st_value != 0 && elf.dynstrtab.get_at(s.st_name) == Some("_PyRuntime"))?
        .st_value
        .wrapping_add(o.bias);
    let is_dict = |d: u64| mem.read_u64(d.wrapping_add(8)).and_then(|t| mem.read_u64(t.wrapping_add(24))).and_then(|n| c_string(mem, n)).as_deref() == Some("dict");
    let mut interps: Vec<u64> = vec![];
    for k in 0..64u64 {
        if let Some(p) = mem.read_u64(runtime.wrapping_add(8 * k)) {
            if p > 0x10000 && !interps.contains(&p) {
                interps.push(p);
            }
        }
    }
    for interp in interps {
        for k in 0..1024u64 {
            let Some(d) = mem.read_u64(interp.wrapping_add(8 * k)) else { break };
            if d < 0x10000 || d & 7 != 0 || !is_dict(d) {
                continue;
            }
            if let Some(keys) = dict_str_keys(mem, d) {
                if keys.iter().any(|k| k == "sys") && keys.iter().any(|k| k == "builtins") && keys.len() > 2 {
                    return Some(keys);
                }
            }
        }
    }
    None
}

/// String keys of a dict object (CPython 3.11/3.12 `PyDictKeysObject`).
fn dict_str_keys<M: Memory>(mem: &M, dict: u64) -> Option<Vec<String>> {
    let keys = mem.read_u64(dict.wrapping_add(32))?;
    let mut hdr = [0u8; 32];
    if mem.read(keys, &mut hdr) != 32 {
        return None;
    }
    let (log2_index_bytes, kind) = (hdr[9] as u64, hdr[10]);
    let nentries = u64::from_le_bytes(hdr[24..32].try_into().ok()?);
    if log2_index_bytes > 24 || nentries > 1 << 20 {
        return None;
    }
    let entries = keys.wrapping_add(32 + (1u64 << log2_index_bytes));
    let (stride, key_off) = match kind {
        0 => (24, 8), // DICT_KEYS_GENERAL: hash, key, value
        1 | 2 => (16, 0), // DICT_KEYS_UNICODE / SPLIT: key, value
        _ => return None,
    };
    let mut out = Vec::new();
    for i in 0..nentries {
        let Some(k) = mem.read_u64(entries.wrapping_add(stride * i + key_off)) else { break };
        if k == 0 {
            continue;
        }
        if let Some(s) = ascii_str(mem, k) {
            out.push(s);
        }
    }
    Some(out)
}

/// A compact ASCII str object's text (data after the header: 48 bytes in 3.11, 40 in 3.12).
fn ascii_str<M: Memory>(mem: &M, obj: u64) -> Option<String> {
    let len = mem.read_u64(obj.wrapping_add(16))?;
    if len == 0 || len > 512 {
        return None;
    }
    for off in [48u64, 40] {
        let mut buf = vec![0u8; len as usize + 1];
        if mem.read(obj.wrapping_add(off), &mut buf) != buf.len() {
            continue;
        }
        if buf[len as usize] == 0 && buf[..len as usize].iter().all(|b| b.is_ascii_graphic()) {
            buf.truncate(len as usize);
            return String::from_utf8(buf).ok();
        }
    }
    None
}

/// Source files of imported modules: `a.b.c` → `a/b/c.py` or `a/b/c/__init__.py` under
/// the directories holding the loaded extensions' top-level packages and the stdlib.
fn module_files(mods: &[String], exts: &[Ext], pid: i32) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for e in exts {
        let so = Path::new(&e.obj.path);
        let mut d = so.parent().map(Path::to_path_buf).unwrap_or_default();
        if d.ends_with("lib-dynload") {
            d = d.parent().map(Path::to_path_buf).unwrap_or_default();
        } else {
            while d.join("__init__.py").exists() {
                d = d.parent().map(Path::to_path_buf).unwrap_or_default();
            }
        }
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    // The stdlib of the interpreter (for hashlib.py & co. when no extension is in lib-dynload).
    if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
        if let Some(name) = exe.file_name().map(|f| f.to_string_lossy().into_owned()) {
            for prefix in ["/usr/lib", "/usr/local/lib"] {
                let d = Path::new(prefix).join(&name);
                if d.is_dir() && !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
        }
    }
    let mut out = Vec::new();
    for m in mods {
        let rel: PathBuf = m.split('.').collect();
        for d in &dirs {
            let f = d.join(&rel).with_extension("py");
            let init = d.join(&rel).join("__init__.py");
            if f.is_file() {
                out.push(f);
                break;
            }
            if init.is_file() {
                out.push(init);
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_include_names_attributes_and_string_words() {
        let mut s = HashSet::new();
        identifiers(b"import numpy as np\nx = np.add.reduce(a, 'openssl_' + name) # 3d\n", &mut s);
        for n in ["import", "numpy", "np", "add", "reduce", "openssl_", "name"] {
            assert!(s.contains(n), "{n}");
        }
        assert!(!s.contains("3d"));
    }

    #[test]
    fn dotted_and_identifier_names() {
        assert!(is_ident("openssl_sha256"));
        assert!(!is_ident("3x"));
        assert!(is_dotted("numpy.ufunc"));
        assert!(!is_dotted("numpy..ufunc"));
        assert!(!is_dotted("a b"));
    }
}

//! Load-time instrumentation: makes a module able to stop anywhere and
//! unwind/rewind its own wasm stack.
//!
//! Two steps, the result cached on disk by the original module's SHA-256:
//!
//! 1. **Poll insertion** (here, with `wasmparser` + `wasm-encoder`): a new
//!    import `mig.poll: [] -> []` and a new mutable global `mig:stop` (i32, 0).
//!    After every `loop` opcode and at the entry of every function that makes
//!    a call, we insert `global.get $stop; if; call $poll; end`. The poll is a
//!    single global load and a not-taken branch while nobody asks for a stop.
//!    Leaf functions without loops get nothing: they finish in bounded time,
//!    and asyncify then leaves them uninstrumented too (it only instruments
//!    functions that can reach `mig.poll` in the call graph). Every mutable
//!    global defined by the module is exported as `mig:g<index>` and memory 0
//!    as `mig:memory`, so the runtime can read and write the whole state.
//! 2. **Asyncify** (Binaryen `wasm-opt --asyncify`, `mig.poll` as the only
//!    import that may unwind, then `-O2`): the module can unwind its stack
//!    into a buffer in linear memory and rewind it later.
//!
//! The runtime sets `mig:stop` to 1 (from an epoch-deadline callback, which
//! fires at the next loop header or call once another thread bumps the
//! engine epoch); the next poll then starts an asyncify unwind.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use wasm_encoder::reencode::{self, Reencode};
use wasm_encoder::{
    ConstExpr, EntityType, ExportKind, GlobalType, Instruction, SectionId, ValType,
};
use wasmparser::{Operator, Parser, Payload};

use crate::error::ModuleError;

/// Bumped whenever the instrumentation output changes, so stale cache
/// entries are never used.
pub const INSTRUMENT_VERSION: u32 = 1;
/// Import module and name of the poll function.
pub const POLL_MODULE: &str = "mig";
pub const POLL_NAME: &str = "poll";
/// Export name of the stop flag global.
pub const STOP_EXPORT: &str = "mig:stop";
/// Export name of memory 0.
pub const MEMORY_EXPORT: &str = "mig:memory";
/// Export prefix of the module's own mutable globals.
pub const GLOBAL_PREFIX: &str = "mig:g";

/// SHA-256 of a module's bytes, lowercase hex: the module's identity in
/// images and in the cache.
pub fn module_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where instrumented modules and compiled code are cached:
/// `$MIGRATOR_CACHE_DIR`, else `$XDG_CACHE_HOME/migrator`, else
/// `$HOME/.cache/migrator`, else `/tmp/migrator-cache`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MIGRATOR_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("migrator");
    }
    if let Some(d) = std::env::var_os("HOME") {
        return PathBuf::from(d).join(".cache/migrator");
    }
    PathBuf::from("/tmp/migrator-cache")
}

/// Returns the instrumented module for `original`, from the cache when
/// present, else by running both steps and storing the result.
/// The boolean says whether it was a cache hit.
pub fn instrumented(original: &[u8]) -> Result<(Vec<u8>, bool), ModuleError> {
    let hash = module_hash(original);
    let dir = cache_dir().join("instrumented");
    let path = dir.join(format!("{hash}-v{INSTRUMENT_VERSION}.wasm"));
    if let Ok(bytes) = std::fs::read(&path) {
        if wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
            .validate_all(&bytes)
            .is_ok()
        {
            return Ok((bytes, true));
        }
    }
    let with_polls = insert_polls(original)?;
    let out = run_asyncify(&with_polls)?;
    std::fs::create_dir_all(&dir).map_err(|source| ModuleError::Cache { path: dir.clone(), source })?;
    write_atomic(&path, &out).map_err(|source| ModuleError::Cache { path: path.clone(), source })?;
    Ok((out, false))
}

/// Both steps, without the cache.
pub fn instrument_uncached(original: &[u8]) -> Result<Vec<u8>, ModuleError> {
    run_asyncify(&insert_polls(original)?)
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Runs Binaryen's asyncify with `mig.poll` as the only unwinding import.
fn run_asyncify(module: &[u8]) -> Result<Vec<u8>, ModuleError> {
    let wasm_opt = std::env::var_os("MIGRATOR_WASM_OPT").unwrap_or_else(|| "wasm-opt".into());
    let tmp = tempdir()?;
    let input = tmp.join("in.wasm");
    let output = tmp.join("out.wasm");
    std::fs::write(&input, module).map_err(|e| ModuleError::Instrument(e.to_string()))?;
    let result = Command::new(&wasm_opt)
        .arg(&input)
        .args([
            "--enable-bulk-memory",
            "--enable-sign-ext",
            "--enable-mutable-globals",
            "--enable-nontrapping-float-to-int",
            "--enable-simd",
            "--asyncify",
            &format!("--pass-arg=asyncify-imports@{POLL_MODULE}.{POLL_NAME}"),
            "-O2",
            "-o",
        ])
        .arg(&output)
        .output();
    let out = match result {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(ModuleError::WasmOpt(format!("cannot run {}: {e}", wasm_opt.to_string_lossy())));
        }
    };
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        let msg = String::from_utf8_lossy(&out.stderr);
        return Err(ModuleError::WasmOpt(msg.lines().next().unwrap_or("failed").to_string()));
    }
    let bytes = std::fs::read(&output).map_err(|e| ModuleError::WasmOpt(e.to_string()));
    let _ = std::fs::remove_dir_all(&tmp);
    bytes
}

fn tempdir() -> Result<PathBuf, ModuleError> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "migrator-instr-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).map_err(|e| ModuleError::Instrument(e.to_string()))?;
    Ok(d)
}

/// What the pre-scan learns about a module.
#[derive(Default)]
struct Scan {
    n_types: u32,
    n_func_imports: u32,
    n_globals: u32,
    mutable_defined_globals: Vec<u32>,
    has_memory: bool,
    exports_start: bool,
    /// For each defined function: whether it contains a call.
    calls: Vec<bool>,
}

fn scan(bytes: &[u8]) -> Result<Scan, ModuleError> {
    let mut s = Scan::default();
    let inv = |e: wasmparser::BinaryReaderError| ModuleError::Invalid(e.to_string());
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(inv)? {
            Payload::Version { encoding: wasmparser::Encoding::Component, .. } => {
                return Err(ModuleError::Invalid("components are not supported, only core modules".into()))
            }
            Payload::TypeSection(r) => {
                for g in r {
                    s.n_types += g.map_err(inv)?.types().len() as u32;
                }
            }
            Payload::ImportSection(r) => {
                for imp in r.into_imports() {
                    match imp.map_err(inv)?.ty {
                        wasmparser::TypeRef::Func(_) => s.n_func_imports += 1,
                        wasmparser::TypeRef::Global(_) => s.n_globals += 1,
                        wasmparser::TypeRef::Memory(_) => s.has_memory = true,
                        _ => {}
                    }
                }
            }
            Payload::MemorySection(r) => s.has_memory |= r.count() > 0,
            Payload::GlobalSection(r) => {
                for g in r {
                    let g = g.map_err(inv)?;
                    if g.ty.mutable {
                        s.mutable_defined_globals.push(s.n_globals);
                    }
                    s.n_globals += 1;
                }
            }
            Payload::ExportSection(r) => {
                for e in r {
                    let e = e.map_err(inv)?;
                    if e.name == "_start" && e.kind == wasmparser::ExternalKind::Func {
                        s.exports_start = true;
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut calls = false;
                let mut ops = body.get_operators_reader().map_err(inv)?;
                while !ops.eof() {
                    if matches!(
                        ops.read().map_err(inv)?,
                        Operator::Call { .. }
                            | Operator::CallIndirect { .. }
                            | Operator::ReturnCall { .. }
                            | Operator::ReturnCallIndirect { .. }
                            | Operator::CallRef { .. }
                    ) {
                        calls = true;
                        break;
                    }
                }
                s.calls.push(calls);
            }
            _ => {}
        }
    }
    Ok(s)
}

/// For every function index (imports included, as 0): an upper bound of
/// the bytes asyncify saves for one frame of it (call index plus every
/// param and local, instrumentation temporaries included). Used to size the
/// unwind buffer before an unwind, because asyncify does not bounds-check it.
pub fn frame_bounds(instrumented: &[u8]) -> Result<Vec<u32>, ModuleError> {
    let inv = |e: wasmparser::BinaryReaderError| ModuleError::Invalid(e.to_string());
    let size = |t: wasmparser::ValType| match t {
        wasmparser::ValType::I32 | wasmparser::ValType::F32 => 4u32,
        wasmparser::ValType::V128 => 16,
        _ => 8,
    };
    let mut types: Vec<u32> = Vec::new(); // param bytes per type index
    let mut func_types: Vec<u32> = Vec::new();
    let mut out = Vec::new();
    let mut code_i = 0usize;
    let mut n_imports = 0usize;
    for payload in Parser::new(0).parse_all(instrumented) {
        match payload.map_err(inv)? {
            Payload::TypeSection(r) => {
                for g in r {
                    for st in g.map_err(inv)?.into_types() {
                        let b = match st.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => f.params().iter().map(|t| size(*t)).sum(),
                            _ => 0,
                        };
                        types.push(b);
                    }
                }
            }
            Payload::ImportSection(r) => {
                for imp in r.into_imports() {
                    if let wasmparser::TypeRef::Func(_) = imp.map_err(inv)?.ty {
                        out.push(0);
                        n_imports += 1;
                    }
                }
            }
            Payload::FunctionSection(r) => {
                for t in r {
                    func_types.push(t.map_err(inv)?);
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut b = 4 + types.get(*func_types.get(code_i).unwrap_or(&0) as usize).copied().unwrap_or(0);
                for l in body.get_locals_reader().map_err(inv)? {
                    let (n, t) = l.map_err(inv)?;
                    b = b.saturating_add(n.saturating_mul(size(t)));
                }
                out.push(b);
                code_i += 1;
            }
            _ => {}
        }
    }
    debug_assert_eq!(out.len(), n_imports + code_i);
    Ok(out)
}

/// Checks that `bytes` is a WASI command module we can run.
pub fn check_module(bytes: &[u8], path: &Path) -> Result<(), ModuleError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(ModuleError::NotWasm { path: path.to_path_buf() });
    }
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(bytes)
        .map_err(|e| ModuleError::Invalid(e.to_string()))?;
    let s = scan(bytes)?;
    if !s.exports_start || !s.has_memory {
        return Err(ModuleError::NotCommand);
    }
    Ok(())
}

/// Step 1: inserts the polls and the exports (see the module docs).
pub fn insert_polls(bytes: &[u8]) -> Result<Vec<u8>, ModuleError> {
    let scan = scan(bytes)?;
    let mut r = PollInserter {
        poll_type: scan.n_types,
        poll_func: scan.n_func_imports,
        stop_global: scan.n_globals,
        scan,
        last: None,
        done_types: false,
        done_imports: false,
        done_globals: false,
        done_exports: false,
        func_counter: 0,
    };
    let mut module = wasm_encoder::Module::new();
    r.parse_core_module(&mut module, Parser::new(0), bytes)
        .map_err(|e| ModuleError::Instrument(format!("{e}")))?;
    Ok(module.finish())
}

struct PollInserter {
    scan: Scan,
    poll_type: u32,
    poll_func: u32,
    stop_global: u32,
    last: Option<SectionId>,
    done_types: bool,
    done_imports: bool,
    done_globals: bool,
    done_exports: bool,
    func_counter: usize,
}

/// Position of a section in the required order of a core module.
fn rank(id: SectionId) -> u8 {
    match id {
        SectionId::Type => 1,
        SectionId::Import => 2,
        SectionId::Function => 3,
        SectionId::Table => 4,
        SectionId::Memory => 5,
        SectionId::Tag => 6,
        SectionId::Global => 7,
        SectionId::Export => 8,
        SectionId::Start => 9,
        SectionId::Element => 10,
        SectionId::DataCount => 11,
        SectionId::Code => 12,
        SectionId::Data => 13,
        _ => 0,
    }
}

impl PollInserter {
    fn add_types(&mut self, s: &mut wasm_encoder::TypeSection) {
        s.ty().function([], []);
        self.done_types = true;
    }
    fn add_imports(&mut self, s: &mut wasm_encoder::ImportSection) {
        s.import(POLL_MODULE, POLL_NAME, EntityType::Function(self.poll_type));
        self.done_imports = true;
    }
    fn add_globals(&mut self, s: &mut wasm_encoder::GlobalSection) {
        s.global(
            GlobalType { val_type: ValType::I32, mutable: true, shared: false },
            &ConstExpr::i32_const(0),
        );
        self.done_globals = true;
    }
    fn add_exports(&mut self, s: &mut wasm_encoder::ExportSection) {
        s.export(STOP_EXPORT, ExportKind::Global, self.stop_global);
        s.export(MEMORY_EXPORT, ExportKind::Memory, 0);
        for g in &self.scan.mutable_defined_globals {
            s.export(&format!("{GLOBAL_PREFIX}{g}"), ExportKind::Global, *g);
        }
        self.done_exports = true;
    }
    fn poll_sequence(&self, f: &mut wasm_encoder::Function) {
        f.instruction(&Instruction::GlobalGet(self.stop_global));
        f.instruction(&Instruction::If(wasm_encoder::BlockType::Empty));
        f.instruction(&Instruction::Call(self.poll_func));
        f.instruction(&Instruction::End);
    }
}

impl Reencode for PollInserter {
    type Error = std::convert::Infallible;

    fn function_index(&mut self, func: u32) -> Result<u32, reencode::Error<Self::Error>> {
        // The poll import goes last among the imports: defined functions shift by one.
        Ok(if func >= self.scan.n_func_imports { func + 1 } else { func })
    }

    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        // Emit our own section where the module has none of that kind.
        let next = before.map(rank).unwrap_or(u8::MAX);
        let cur = self.last.map(rank).unwrap_or(0);
        let missing = |r: u8| cur < r && next > r;
        if !self.done_types && missing(1) {
            let mut s = wasm_encoder::TypeSection::new();
            self.add_types(&mut s);
            module.section(&s);
        }
        if !self.done_imports && missing(2) {
            let mut s = wasm_encoder::ImportSection::new();
            self.add_imports(&mut s);
            module.section(&s);
        }
        if !self.done_globals && missing(7) {
            let mut s = wasm_encoder::GlobalSection::new();
            self.add_globals(&mut s);
            module.section(&s);
        }
        if !self.done_exports && missing(8) {
            let mut s = wasm_encoder::ExportSection::new();
            self.add_exports(&mut s);
            module.section(&s);
        }
        self.last = before;
        Ok(())
    }

    fn parse_type_section(
        &mut self,
        types: &mut wasm_encoder::TypeSection,
        section: wasmparser::TypeSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_type_section(self, types, section)?;
        self.add_types(types);
        Ok(())
    }

    fn parse_import_section(
        &mut self,
        imports: &mut wasm_encoder::ImportSection,
        section: wasmparser::ImportSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_import_section(self, imports, section)?;
        self.add_imports(imports);
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut wasm_encoder::GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_global_section(self, globals, section)?;
        self.add_globals(globals);
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut wasm_encoder::ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        reencode::utils::parse_export_section(self, exports, section)?;
        self.add_exports(exports);
        Ok(())
    }

    fn parse_function_body(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        func: wasmparser::FunctionBody<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        let calls = self.scan.calls.get(self.func_counter).copied().unwrap_or(true);
        self.func_counter += 1;
        let mut f = self.new_function_with_parsed_locals(&func)?;
        if calls {
            self.poll_sequence(&mut f);
        }
        let mut reader = func.get_operators_reader()?;
        while !reader.eof() {
            let op = reader.read()?;
            let is_loop = matches!(op, Operator::Loop { .. });
            let ins: Instruction<'_> = self.instruction(op)?;
            f.instruction(&ins);
            if is_loop {
                self.poll_sequence(&mut f);
            }
        }
        code.function(&f);
        Ok(())
    }

    fn parse_custom_section(
        &mut self,
        module: &mut wasm_encoder::Module,
        section: wasmparser::CustomSectionReader<'_>,
    ) -> Result<(), reencode::Error<Self::Error>> {
        // Linking/relocation sections would be stale after the index shift.
        if section.name() == "linking" || section.name().starts_with("reloc.") {
            return Ok(());
        }
        reencode::utils::parse_custom_section(self, module, section)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_inserted_and_indices_shifted() {
        let wat = r#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory 1)
            (global $g (mut i32) (i32.const 5))
            (func $leaf (result i32) (i32.const 1))
            (func $_start (export "_start")
                (loop $l (br_if $l (i32.eqz (call $leaf))))
                (call $exit (i32.const 0))))"#;
        let _ = wat; // no `wat` feature: build the module by hand below
        let mut m = wasm_encoder::Module::new();
        let mut t = wasm_encoder::TypeSection::new();
        t.ty().function([ValType::I32], []);
        t.ty().function([], [ValType::I32]);
        t.ty().function([], []);
        m.section(&t);
        let mut i = wasm_encoder::ImportSection::new();
        i.import("wasi_snapshot_preview1", "proc_exit", EntityType::Function(0));
        m.section(&i);
        let mut fs = wasm_encoder::FunctionSection::new();
        fs.function(1);
        fs.function(2);
        m.section(&fs);
        let mut mem = wasm_encoder::MemorySection::new();
        mem.memory(wasm_encoder::MemoryType { minimum: 1, maximum: None, memory64: false, shared: false, page_size_log2: None });
        m.section(&mem);
        let mut gs = wasm_encoder::GlobalSection::new();
        gs.global(GlobalType { val_type: ValType::I32, mutable: true, shared: false }, &ConstExpr::i32_const(5));
        m.section(&gs);
        let mut ex = wasm_encoder::ExportSection::new();
        ex.export("_start", ExportKind::Func, 2);
        m.section(&ex);
        let mut code = wasm_encoder::CodeSection::new();
        let mut leaf = wasm_encoder::Function::new([]);
        leaf.instruction(&Instruction::I32Const(1));
        leaf.instruction(&Instruction::End);
        code.function(&leaf);
        let mut st = wasm_encoder::Function::new([]);
        st.instruction(&Instruction::Loop(wasm_encoder::BlockType::Empty));
        st.instruction(&Instruction::Call(1));
        st.instruction(&Instruction::I32Eqz);
        st.instruction(&Instruction::BrIf(0));
        st.instruction(&Instruction::End);
        st.instruction(&Instruction::I32Const(0));
        st.instruction(&Instruction::Call(0));
        st.instruction(&Instruction::End);
        code.function(&st);
        m.section(&code);
        let orig = m.finish();
        check_module(&orig, Path::new("t.wasm")).unwrap();
        let out = insert_polls(&orig).unwrap();
        wasmparser::Validator::new().validate_all(&out).unwrap();
        let text = wasmprinter_like(&out);
        // leaf: no poll; _start: entry poll + loop poll, calls shifted (leaf is now 2)
        assert_eq!(text.matches("call 1").count(), 2, "{text}");
        assert!(text.contains("call 2"), "{text}");
        assert!(text.contains("export mig:g0"), "{text}");
    }

    #[test]
    fn frame_bounds_cover_params_and_locals() {
        let mut m = wasm_encoder::Module::new();
        let mut t = wasm_encoder::TypeSection::new();
        t.ty().function([ValType::I32, ValType::F64], []);
        m.section(&t);
        let mut i = wasm_encoder::ImportSection::new();
        i.import("env", "f", EntityType::Function(0));
        m.section(&i);
        let mut fs = wasm_encoder::FunctionSection::new();
        fs.function(0);
        m.section(&fs);
        let mut code = wasm_encoder::CodeSection::new();
        let mut f = wasm_encoder::Function::new([(2, ValType::I64), (1, ValType::V128)]);
        f.instruction(&Instruction::End);
        code.function(&f);
        m.section(&code);
        // import: 0; function: 4 (call index) + 4 + 8 (params) + 2*8 + 16 (locals)
        assert_eq!(frame_bounds(&m.finish()).unwrap(), vec![0, 48]);
    }

    /// A tiny dump of calls and exports, enough for the assertions above.
    fn wasmprinter_like(bytes: &[u8]) -> String {
        let mut s = String::new();
        for p in Parser::new(0).parse_all(bytes) {
            match p.unwrap() {
                Payload::ExportSection(r) => {
                    for e in r {
                        s.push_str(&format!("export {}\n", e.unwrap().name));
                    }
                }
                Payload::CodeSectionEntry(b) => {
                    let mut ops = b.get_operators_reader().unwrap();
                    while !ops.eof() {
                        if let Operator::Call { function_index } = ops.read().unwrap() {
                            s.push_str(&format!("call {function_index}\n"));
                        }
                    }
                }
                _ => {}
            }
        }
        s
    }
}

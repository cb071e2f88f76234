//! Engines: wasmtime configured the same way for both code generators, and
//! compiled code cached on disk.

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::ModuleError;
use crate::instrument::{self, cache_dir, module_hash};

/// The wasm stack a task may use (deep recursion fixtures need more than
/// wasmtime's 512 KiB default). Task threads get a larger native stack.
pub const MAX_WASM_STACK: usize = 16 << 20;
/// Most wasm frames that fit in [`MAX_WASM_STACK`]: a frame takes at least
/// 16 bytes (return address and frame pointer) under Cranelift and Pulley.
pub const MAX_WASM_FRAMES: usize = MAX_WASM_STACK / 16;
/// Native stack of a task thread: room for the wasm stack and host frames.
pub const TASK_THREAD_STACK: usize = MAX_WASM_STACK + (16 << 20);

/// Which code generator runs a task. Images hold nothing engine-specific,
/// so an image taken under one restores under the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Cranelift native code for this host (x86_64 here).
    #[default]
    Cranelift,
    /// wasmtime's Pulley interpreter: a second "ISA" on a one-ISA machine.
    Pulley,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Cranelift => "cranelift",
            EngineKind::Pulley => "pulley",
        }
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cranelift" => Ok(EngineKind::Cranelift),
            "pulley" => Ok(EngineKind::Pulley),
            _ => Err(format!("unknown engine {s:?} (expected cranelift or pulley)")),
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Builds an engine: deterministic NaNs and relaxed SIMD (results never
/// depend on the engine), epoch interruption (how a stop request reaches
/// running code), a large wasm stack.
pub fn new_engine(kind: EngineKind) -> Result<wasmtime::Engine, ModuleError> {
    engine_with(kind, true)
}

/// [`new_engine`], with epoch interruption on or off (off: the baseline
/// for measuring instrumentation overhead).
pub fn engine_with(kind: EngineKind, epochs: bool) -> Result<wasmtime::Engine, ModuleError> {
    let err = |e: wasmtime::Error| ModuleError::Compile { engine: kind.as_str(), message: format!("{e:#}") };
    let mut c = wasmtime::Config::new();
    c.cranelift_nan_canonicalization(true)
        .relaxed_simd_deterministic(true)
        .epoch_interruption(epochs)
        .max_wasm_stack(MAX_WASM_STACK)
        // Only checked against max_wasm_stack: we never run async.
        .async_stack_size(MAX_WASM_STACK + (1 << 20))
        // The poll walks the whole wasm stack to size the unwind buffer:
        // every frame must be seen (wasmtime reserves this many entries up
        // front, so it must stay a sane number).
        .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(MAX_WASM_FRAMES));
    if kind == EngineKind::Pulley {
        c.target("pulley64").map_err(err)?;
    }
    wasmtime::Engine::new(&c).map_err(err)
}

/// A module ready to instantiate, with how it was obtained.
#[derive(Clone)]
pub struct LoadedModule {
    pub module: wasmtime::Module,
    pub engine: wasmtime::Engine,
    pub kind: EngineKind,
    /// SHA-256 of the original (uninstrumented) module.
    pub hash: String,
    pub path: PathBuf,
    pub stats: LoadStats,
    /// Per function index: bytes one asyncify frame of it may need.
    pub frame_bounds: std::sync::Arc<Vec<u32>>,
}

/// How long loading took, and which caches were hit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadStats {
    pub instrument_cache_hit: bool,
    pub instrument_ms: f64,
    pub compile_cache_hit: bool,
    pub compile_ms: f64,
}

/// Reads, checks, instruments (cached) and compiles (cached) a module.
pub fn load_module(path: &std::path::Path, engine: &wasmtime::Engine, kind: EngineKind) -> Result<LoadedModule, ModuleError> {
    let bytes = std::fs::read(path).map_err(|source| ModuleError::Read { path: path.to_path_buf(), source })?;
    load_module_bytes(&bytes, path, engine, kind)
}

pub fn load_module_bytes(
    bytes: &[u8],
    path: &std::path::Path,
    engine: &wasmtime::Engine,
    kind: EngineKind,
) -> Result<LoadedModule, ModuleError> {
    instrument::check_module(bytes, path)?;
    let t = Instant::now();
    let (instr, instrument_cache_hit) = instrument::instrumented(bytes)?;
    let instrument_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let (module, compile_cache_hit) = compile_cached(engine, kind, &instr)?;
    let frame_bounds = std::sync::Arc::new(instrument::frame_bounds(&instr)?);
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    Ok(LoadedModule {
        module,
        engine: engine.clone(),
        kind,
        hash: module_hash(bytes),
        path: path.to_path_buf(),
        stats: LoadStats { instrument_cache_hit, instrument_ms, compile_cache_hit, compile_ms },
        frame_bounds,
    })
}

/// Compiles `wasm` (uncached) — used to measure the original module too.
pub fn compile_uncached(engine: &wasmtime::Engine, kind: EngineKind, wasm: &[u8]) -> Result<wasmtime::Module, ModuleError> {
    wasmtime::Module::new(engine, wasm)
        .map_err(|e| ModuleError::Compile { engine: kind.as_str(), message: format!("{e:#}") })
}

fn compile_cached(engine: &wasmtime::Engine, kind: EngineKind, wasm: &[u8]) -> Result<(wasmtime::Module, bool), ModuleError> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let dir = cache_dir().join("compiled");
    let path = dir.join(format!("{}-{}-{:016x}.cwasm", &module_hash(wasm)[..32], kind.as_str(), h.finish()));
    if path.exists() {
        if let Ok(m) = crate::sys::deserialize_cached(engine, &path) {
            return Ok((m, true));
        }
    }
    let module = compile_uncached(engine, kind, wasm)?;
    if let Ok(bytes) = module.serialize() {
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = instrument::write_atomic(&path, &bytes);
        }
    }
    Ok((module, false))
}

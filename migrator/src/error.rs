//! Error types, one per area. Each carries what the user needs to act on it.

use std::path::PathBuf;

/// Loading, instrumenting or compiling a module.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("cannot read module {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a WebAssembly module (bad magic number)")]
    NotWasm { path: PathBuf },
    #[error("invalid WebAssembly module: {0}")]
    Invalid(String),
    #[error("the module must export `_start` (a WASI command) and its memory")]
    NotCommand,
    #[error("instrumenting the module failed: {0}")]
    Instrument(String),
    #[error("wasm-opt (binaryen) failed: {0}; install the Debian package `binaryen` or set MIGRATOR_WASM_OPT")]
    WasmOpt(String),
    #[error("cache directory {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
    #[error("compiling the module for {engine}: {message}")]
    Compile { engine: &'static str, message: String },
}

/// Reading, writing or checking a checkpoint image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("not a migrator checkpoint image (bad magic)")]
    BadMagic,
    #[error("unsupported image version {found} (this migrator reads version {supported})")]
    Version { found: u32, supported: u32 },
    #[error("image checksum mismatch (stored {stored:08x}, computed {computed:08x}): the image is corrupt or truncated")]
    Checksum { stored: u32, computed: u32 },
    #[error("image is corrupt: {0}")]
    Corrupt(String),
    #[error("image was taken from module {image} but {given} has hash {module}: wrong module")]
    ModuleMismatch { image: String, module: String, given: PathBuf },
    #[error("image I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Running, checkpointing or restoring a task.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Module(#[from] ModuleError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("wasm runtime: {0}")]
    Runtime(String),
    #[error("task trapped: {0}")]
    Trap(String),
    #[error("restoring WASI state: {0}")]
    WasiRestore(String),
    #[error("checkpoint failed: {0}")]
    Checkpoint(String),
    #[error("preopened directory {host}: {source}")]
    Preopen { host: PathBuf, source: std::io::Error },
    #[error("task was killed")]
    Killed,
}

impl TaskError {
    /// Converts a wasmtime error once, at the runtime boundary: a trap keeps
    /// its wasm backtrace text, anything else becomes `Runtime`.
    pub(crate) fn from_wasmtime(err: wasmtime::Error) -> Self {
        // One line: the trap and the innermost wasm function, not the
        // multi-line backtrace wasmtime's Display adds.
        if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
            let at = err
                .downcast_ref::<wasmtime::WasmBacktrace>()
                .and_then(|bt| bt.frames().first().map(|f| (f.func_name().map(str::to_string), f.func_index())))
                .map(|(name, idx)| format!(" in wasm function {}", name.unwrap_or_else(|| idx.to_string())))
                .unwrap_or_default();
            TaskError::Trap(format!("{trap}{at}"))
        } else {
            TaskError::Runtime(format!("{err:#}").lines().next().unwrap_or("wasm runtime error").to_string())
        }
    }
}

/// Talking to a task or the daemon over a control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no task named {name:?} is running (no socket at {socket} and no daemon knows it)")]
    NoSuchTask { name: String, socket: PathBuf },
    #[error("no migrator daemon is listening at {0}: start one with `migrator serve`")]
    NoDaemon(PathBuf),
    #[error("control socket {path}: {source}")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("bad control message: {0}")]
    Protocol(String),
    #[error("{0}")]
    Remote(String),
}

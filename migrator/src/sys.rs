//! The only `unsafe` in the crate.

use std::path::Path;

/// Loads compiled code from our own cache directory.
pub fn deserialize_cached(engine: &wasmtime::Engine, path: &Path) -> wasmtime::Result<wasmtime::Module> {
    // SAFETY: `Module::deserialize_file` trusts the file to be code that
    // wasmtime itself produced. The file lives in migrator's private cache
    // directory, was written there by `Module::serialize` under a name keyed by
    // the instrumented module's hash and the engine's compatibility hash, and
    // wasmtime still checks its header (version, target, config) and refuses a
    // mismatch, in which case the caller recompiles.
    unsafe { wasmtime::Module::deserialize_file(engine, path) }
}

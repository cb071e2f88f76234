//! Integration tests: the real library and binary with real wasmtime and
//! the real fixtures (built by fixtures/wasm/build.sh, run on demand here).

mod checkpoint;
mod cli;
mod daemon;
mod diskfull;
mod util;

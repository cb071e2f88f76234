//! The network side's `unsafe`: loading code received from a peer, and the
//! fault-injection crash used by the fault tests.

use std::path::Path;

/// Loads a `.cwasm` a peer sent.
pub fn deserialize_from_peer(engine: &wasmtime::Engine, path: &Path) -> wasmtime::Result<wasmtime::Module> {
    // SAFETY: wasmtime trusts a serialized module to be code it produced
    // itself. These bytes come only from a peer that proved it holds the
    // migration key (net::auth) — the same trust as running the tasks it
    // sends — and arrived in CRC-checked frames; wasmtime still checks the
    // header (version, target, compiler flags, host features) and refuses
    // a mismatch. A host that does not want to trust peers' code runs
    // `migrator serve --no-precompiled`.
    unsafe { wasmtime::Module::deserialize_file(engine, path) }
}

/// Dies at once, as `kill -9` would (fault tests: `MIGRATOR_FAULT=<step>`).
pub fn die_now() -> ! {
    // SAFETY: getpid and kill have no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

/// CLOCK_MONOTONIC in ns: the clock monitor-probe stamps events with
/// (`mono_ns`, `kernel_ns`), so trigger-to-running can be measured across processes.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if r != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#!/usr/bin/env bash
# Migrator benchmarks (docs/migrator.md, "Benchmarks"): instrumentation overhead
# (instrumented vs original module, same engine settings, best of REPS runs),
# checkpoint/restore time and image size vs touched memory (compressible and
# random data), compile vs cache-hit time, and time to stop a compute loop.
# Prints JSON lines; SIZES, REPS and ONLY (overhead,checkpoint,stop) narrow it.
set -euo pipefail
cd "$(dirname "$0")/.."
fixtures/wasm/build.sh >/dev/null
cargo build -q -p migrator
args=(--fixtures fixtures/build/wasm --reps "${REPS:-5}" --sizes "${SIZES:-1,16,64,256}" --dir "${BENCH_DIR:-/tmp}")
[ -n "${ONLY:-}" ] && args+=(--only "$ONLY")
echo "# host: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
target/debug/migrator bench "${args[@]}"

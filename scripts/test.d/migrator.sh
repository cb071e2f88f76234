#!/usr/bin/env bash
# Bounded smoke run of the migrator: a foreground task under Pulley
# checkpointed by name, restored under Cranelift and finished, output compared
# with an uninterrupted run; then a short benchmark pass.
set -euo pipefail
cd "$(dirname "$0")/../.."
fixtures/wasm/build.sh >/dev/null
cargo build -q -p migrator
m=target/debug/migrator
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
export MIGRATOR_RUNTIME_DIR="$work/run" MIGRATOR_CACHE_DIR="${MIGRATOR_CACHE_DIR:-$work/cache}"
$m run fixtures/build/wasm/hashchain.wasm -- 20000 >"$work/full.out"
$m run --engine pulley --name smoke fixtures/build/wasm/hashchain.wasm -- 20000 >"$work/a.out" &
pid=$!
for _ in $(seq 100); do $m ps | grep -q '^smoke ' && break; sleep 0.05; done
sleep 0.2
$m checkpoint --task smoke -o "$work/smoke.img"
wait $pid
$m restore --engine cranelift "$work/smoke.img" >"$work/b.out"
cat "$work/a.out" "$work/b.out" | cmp - "$work/full.out" || { echo "[migrator] restored output differs" >&2; exit 1; }
REPS=1 SIZES=1,16 ONLY=overhead,checkpoint scripts/bench-migrator.sh
echo "[migrator] smoke ok"

#!/usr/bin/env bash
# Migration benchmark over a veth pair between two network namespaces: a 64 MiB task
# (matmul N=1600: three 1600x1600 double matrices) moved A -> B, stop-and-copy vs --live,
# plus a task that rewrites all of its 64 MiB continuously (alloc_fill) under --live, which
# must fall back to stop-and-copy. Downtime and total are measured by the migrator itself
# (source clock: task stopped -> destination's "started" received). One JSON line per run.
#
# Usage (root): scripts/bench-migration.sh        Knobs: REPS (default 3), ENGINE_B (pulley|cranelift)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/lib/two-hosts.sh
[ "$(id -u)" -eq 0 ] || { echo "bench-migration: run as root (network namespaces)" >&2; exit 2; }
REPS=${REPS:-3}
ENGINE_B=${ENGINE_B:-pulley}
NS_A=mig-bench-a NS_B=mig-bench-b IP_B=10.77.1.2 PORT=9876
M=$ROOT/target/debug/migrator
cargo build -q -p migrator -p tracer --bins
fixtures/wasm/build.sh >/dev/null
W=$(mktemp -d /tmp/migrator-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  two_hosts_down "$NS_A" "$NS_B"
  rm -rf "$W"
}
trap cleanup EXIT
two_hosts_up "$NS_A" 10.77.1.1 "$NS_B" "$IP_B" mig-bench-v

head -c 32 /dev/urandom | base64 > "$W/key"
export MIGRATION_TOKEN_FILE=$W/key MIGRATOR_CACHE_DIR=${MIGRATOR_CACHE_DIR:-$ROOT/target/tmp/migrator-cache}
ip netns exec "$NS_B" env MIGRATOR_RUNTIME_DIR="$W/b" "$M" serve --listen "$IP_B:$PORT" --engine "$ENGINE_B" 2>"$W/b.log" &
PIDS+=($!)
ip netns exec "$NS_A" env MIGRATOR_RUNTIME_DIR="$W/a" "$M" serve --no-listen 2>"$W/a.log" &
PIDS+=($!)
for _ in $(seq 200); do
  [ -S "$W/a/daemon.sock" ] && ip netns exec "$NS_A" bash -c "exec 3<>/dev/tcp/$IP_B/$PORT" 2>/dev/null && break
  sleep 0.05
done
A() { ip netns exec "$NS_A" env MIGRATOR_RUNTIME_DIR="$W/a" "$M" "$@"; }
B() { ip netns exec "$NS_B" env MIGRATOR_RUNTIME_DIR="$W/b" "$M" "$@"; }

run_one() { # label module warmup_s mode args...
  local label=$1 module=$2 warm=$3 mode=$4; shift 4
  local name="b$RANDOM"
  A run --detach --name "$name" "$ROOT/fixtures/build/wasm/$module" -- "$@" >/dev/null
  sleep "$warm"
  local flags=(); [ "$mode" = live ] && flags=(--live)
  local rep
  rep=$(A migrate --json --task "$name" --to "$IP_B:$PORT" "${flags[@]}") || { echo "{\"bench\":\"$label\",\"mode\":\"$mode\",\"error\":true}"; A kill --task "$name" >/dev/null 2>&1 || true; return; }
  B kill --task "$name" >/dev/null 2>&1 || true
  python3 - "$label" "$mode" "$rep" <<'PY'
import json, sys
r = json.loads(sys.argv[3])
print(json.dumps({"bench": sys.argv[1], "mode": sys.argv[2], "memory_mib": round(r["memory_bytes"] / 2**20, 1),
  "downtime_ms": round(r["downtime_ms"], 2), "total_ms": round(r["total_ms"], 1), "stop_us": r["stop_us"],
  "dest_restore_ms": round(r["dest_restore_us"] / 1e3, 2), "rounds": len(r["rounds"]),
  "round_pages": [x["pages"] for x in r["rounds"]], "max_round_pause_ms": round(max([x["pause_us"] for x in r["rounds"]] or [0]) / 1e3, 2),
  "final_pages": r["final_pages"], "precopy_end": r["precopy_end"], "dirty_tracking": r.get("dirty_tracking", ""), "wire_mib": round(r["bytes_sent"] / 2**20, 2),
  "code": r["code"], "dest_engine": r["dest_engine"]}))
PY
}

for i in $(seq "$REPS"); do
  run_one matmul-64MiB matmul.wasm 3 stop-and-copy 1600 1000
  run_one matmul-64MiB matmul.wasm 3 live 1600 1000
done
for i in $(seq "$REPS"); do
  run_one alloc_fill-64MiB-rewriting alloc_fill.wasm 2 live 64 100000
done

#!/usr/bin/env bash
# The main job, end to end: two hosts as network namespaces joined by a veth pair;
# `migrator serve` in B (Pulley engine: stands in for an ARM64 host); a WASM task in A;
# monitor-probe in A with a page-cache threshold a little above the current value; the page
# cache is filled by reading a file; the monitor fires, A's migrator moves the task to B,
# where it finishes. The combined output (A's log, then B's) must equal an uninterrupted run.
#
# Usage (root, Debian 12):  scripts/demo.sh
# Knobs: DEMO_ROUNDS (hashchain rounds, default 400000), DEMO_TRIGGER=notify|exec (how the
# monitor reaches the migrator: its control socket, or scripts/on-trigger.sh), DEMO_LIVE=1
# (pre-copy), DEMO_FILE_MB (page-cache fill, default 400), DEMO_INTERVAL (monitor sampling
# interval in seconds, default 1), DEMO_SKIP_SETUP=1 (no setup/build).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. scripts/lib/two-hosts.sh
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (network namespaces, eBPF)" >&2; exit 2; }

ROUNDS=${DEMO_ROUNDS:-400000}
TRIGGER=${DEMO_TRIGGER:-notify}
FILE_MB=${DEMO_FILE_MB:-400}
INTERVAL=${DEMO_INTERVAL:-1}
NS_A=mig-demo-a NS_B=mig-demo-b
IP_A=10.77.0.1 IP_B=10.77.0.2
PORT=${MIGRATION_PORT:-9876}

if [ -z "${DEMO_SKIP_SETUP:-}" ]; then
  scripts/setup.sh
  scripts/build-fixtures.sh
  cargo build --workspace --bins
fi
M=$ROOT/target/debug/migrator
MON=$ROOT/target/debug/monitor-probe
TASK=$ROOT/fixtures/build/wasm/hashchain.wasm
for f in "$M" "$MON" "$TASK" "$ROOT/target/debug/tracer"; do [ -e "$f" ] || { echo "demo: $f missing" >&2; exit 2; }; done

W=$(mktemp -d /tmp/migrator-demo.XXXXXX)
PIDS=()
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  two_hosts_down "$NS_A" "$NS_B"
  if [ "$rc" -ne 0 ]; then echo "[demo] FAILED (exit $rc); logs kept in $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- two hosts ---
two_hosts_up "$NS_A" "$IP_A" "$NS_B" "$IP_B" mig-demo-v
echo "[demo] hosts: A=$NS_A ($IP_A), B=$NS_B ($IP_B), veth pair"

# Shared key, separate runtime dirs (both namespaces see the same filesystem).
head -c 32 /dev/urandom | base64 > "$W/key"
export MIGRATION_TOKEN_FILE=$W/key MIGRATOR_CACHE_DIR=${MIGRATOR_CACHE_DIR:-$W/cache}
export ARM_MIGRATION_HOST=$IP_B:$PORT

# The reference: an uninterrupted run of the same task.
MIGRATOR_RUNTIME_DIR=$W/ref "$M" run "$TASK" -- "$ROUNDS" > "$W/reference.out"

# --- B: receives tasks, runs them under Pulley ---
ip netns exec "$NS_B" env MIGRATOR_RUNTIME_DIR="$W/b" "$M" serve --listen "$IP_B:$PORT" --engine pulley 2> >(sed -u 's/^/[B] /' >&2) &
PIDS+=($!)
# --- A: runs the task; triggers move it to B ---
live=(); [ -n "${DEMO_LIVE:-}" ] && live=(--live)
ip netns exec "$NS_A" env MIGRATOR_RUNTIME_DIR="$W/a" "$M" serve --no-listen --migrate-to "$ARM_MIGRATION_HOST" "${live[@]}" 2> >(tee "$W/a.log" | sed -u 's/^/[A] /' >&2) &
PIDS+=($!)
for _ in $(seq 200); do
  [ -S "$W/a/daemon.sock" ] && [ -S "$W/b/daemon.sock" ] && ip netns exec "$NS_A" bash -c "exec 3<>/dev/tcp/$IP_B/$PORT" 2>/dev/null && break
  sleep 0.05
done

# Page-cache fill prepared before the task starts: a file, then a cold cache.
dd if=/dev/urandom of="$W/fill.bin" bs=1M count="$FILE_MB" status=none
sync
echo 1 > /proc/sys/vm/drop_caches
cached_mb() { awk '/^Cached:/{c=$2} /^Shmem:/{s=$2} END{printf "%d", (c-s)/1024}' /proc/meminfo; }
NOW=$(cached_mb)
THRESHOLD=$((NOW + FILE_MB / 4))
echo "[demo] page cache now ${NOW} MB; threshold ${THRESHOLD} MB; filling with ${FILE_MB} MB"

# --- the monitor in A ---
if [ "$TRIGGER" = exec ]; then
  action=(--exec "$ROOT/scripts/on-trigger.sh")
else
  action=(--notify "$W/a/daemon.sock")
fi
ip netns exec "$NS_A" env MIGRATOR_RUNTIME_DIR="$W/a" PATH="$ROOT/target/debug:$PATH" \
  "$MON" --host a --cache-threshold "$THRESHOLD" --interval "$INTERVAL" "${action[@]}" > >(sed -u 's/^/[A monitor] /') 2>&1 &
PIDS+=($!)
sleep 2  # programs attached and a first sample out

# --- the task in A ---
ip netns exec "$NS_A" env MIGRATOR_RUNTIME_DIR="$W/a" "$M" run --detach --name job "$TASK" -- "$ROUNDS" >/dev/null
echo "[demo] task 'job' running in A: hashchain $ROUNDS"
sleep 0.3

echo "[demo] filling the page cache: cat fill.bin > /dev/null"
ip netns exec "$NS_A" cat "$W/fill.bin" > /dev/null

# --- wait: task moved to B, finished there ---
state() { MIGRATOR_RUNTIME_DIR="$1" "$M" ps --json 2>/dev/null | python3 -c 'import json,sys; print(next((t["state"] for t in json.load(sys.stdin) if t["name"]=="job"), "none"))'; }
for _ in $(seq 600); do [ "$(state "$W/a")" = migrated ] && break; [ "$(state "$W/a")" = exited ] && break; sleep 0.1; done
[ "$(state "$W/a")" = migrated ] || { echo "[demo] the task was not migrated (A: $(state "$W/a"))" >&2; exit 1; }
echo "[demo] task moved to B; waiting for it to finish there (Pulley is an interpreter: slower)"
for _ in $(seq 3000); do [ "$(state "$W/b")" = exited ] && break; sleep 0.1; done
[ "$(state "$W/b")" = exited ] || { echo "[demo] task did not finish on B (B: $(state "$W/b"))" >&2; exit 1; }

cat "$W/a/logs/job.stdout" "$W/b/logs/job.stdout" > "$W/combined.out"
echo "[demo] output on A: $(wc -l < "$W/a/logs/job.stdout") lines, on B: $(wc -l < "$W/b/logs/job.stdout") lines"
if cmp -s "$W/combined.out" "$W/reference.out"; then
  echo "[demo] combined output is identical to an uninterrupted run"
else
  echo "[demo] combined output DIFFERS from an uninterrupted run" >&2
  diff "$W/reference.out" "$W/combined.out" >&2 || true
  exit 1
fi
grep -h "Trigger to running\|downtime" "$W/a.log" | sed 's/^/[demo] /' || true
echo "[demo] ok"

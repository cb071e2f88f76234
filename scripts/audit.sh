#!/usr/bin/env bash
# Soundness audit: for every ISA fixture and a few real processes (python3 as is and with
# glibc's AVX-512/TSX/XSAVEC masked, redis-server
# under redis-benchmark load, the numpy workload, a compiled C benchmark: openssl speed),
# run `tracer audit` twice (single-step recording, then 1 kHz sampling) and print the
# record ⊆ path ⊆ full table per feature. Exit 1 if any audit found a miss.
# Usage: scripts/audit.sh [STEP_SECS] [SAMPLE_SECS]   (needs root; builds release tracer)
set -uo pipefail
cd "$(dirname "$0")/.."
step=${1:-3}
sample=${2:-5}
cargo build --release -q -p tracer || exit 2
T=target/release/tracer
[ -x fixtures/build/isa/fnptr_table ] && [ -x fixtures/build/python/venv/bin/python3 ] || scripts/build-fixtures.sh
out=${AUDIT_OUT:-target/audit}
mkdir -p "$out"
fail=0
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; }
trap cleanup EXIT

wait_ready() { # file
  for _ in $(seq 100); do grep -q ready "$1" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

audit() { # name pid
  local name=$1 pid=$2
  for how in step sample; do
    local args=(--duration "$step")
    [ "$how" = sample ] && args=(--duration "$sample" --sample 1000)
    echo "== $name ($how) pid $pid"
    "$T" audit --pid "$pid" "${args[@]}" --json > "$out/$name.$how.json"
    rc=$?
    [ $rc -eq 1 ] && fail=1
    [ $rc -gt 1 ] && { echo "tracer audit failed on $name"; fail=1; }
    python3 - "$out/$name.$how.json" <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
c = a["counts"]
rs = a["record_stats"]["record"]
print(f"  record {c['record']} ⊆ path {c['path']} ⊆ full {c['full']}  (required {c['record_required']}/{c['path_required']}/{c['full_required']}); "
      f"stops {rs['stops']}, distinct insns {rs['distinct']}; misses: {a['misses'] or 'none'}")
mark = lambda b: "x" if b else "."
with open(sys.argv[1][:-5] + ".txt", "w") as f:
    for r in a["rows"]:
        f.write(f"{r['name']:<16} {r['class']:<7} {mark(r['record'])} {mark(r['path'])} {mark(r['full'])} {r['status']}\n")
PY
  done
}

start() { # name cmd...
  local name=$1; shift
  "$@" > "$out/$name.stdout" 2>/dev/null &
  local p=$!
  pids+=("$p")
  wait_ready "$out/$name.stdout" || sleep 1
  echo "$p"
}

for f in dead_avx2 fnptr_table dispatch sha_thread strings jit threads8; do
  env=()
  [ "$f" = strings ] && env=(env LD_BIND_NOW=1)
  p=$(start "$f" "${env[@]}" "fixtures/build/isa/$f")
  audit "$f" "$p"
  kill "$p" 2>/dev/null
done

# Real processes.
p=$(start numpy fixtures/build/python/venv/bin/python3 fixtures/python/numpy_work.py); audit numpy "$p"; kill "$p"
p=$(start hashlib /usr/bin/python3 fixtures/python/hash_work.py); audit hashlib "$p"; kill "$p"
p=$(start python3 /usr/bin/python3 -c 'import json,time
print("ready", flush=True)
while True:
    d={"k%d"%i: [i, str(i)*3, i/7] for i in range(2000)}
    s=json.dumps(d); assert json.loads(s)==d; sorted(d, key=lambda k: d[k][2])'); audit python3 "$p"; kill "$p"
# The same, with glibc bound as on an AVX2 host without TSX or XSAVEC (as eval-aws.sh's
# per-source traces): the masked dispatch paths and trampolines (analysis.rs follow_refs).
p=$(start python3-masked env GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD,-XSAVEC,-RTM,-Prefer_No_VZEROUPPER /usr/bin/python3 -c 'import json,time
print("ready", flush=True)
while True:
    d={"k%d"%i: [i, str(i)*3, i/7] for i in range(2000)}
    s=json.dumps(d); assert json.loads(s)==d; sorted(d, key=lambda k: d[k][2])'); audit python3-masked "$p"; kill "$p"
port=$((20000 + RANDOM % 20000))
redis-server --port "$port" --save "" --appendonly no > "$out/redis.stdout" 2>&1 &
rp=$!; pids+=("$rp"); sleep 0.5
redis-benchmark -p "$port" -q -l -c 4 -t set,get,lpush,incr > /dev/null 2>&1 &
bp=$!; pids+=("$bp"); sleep 1
audit redis-server "$rp"; kill "$bp" "$rp"
openssl speed -seconds 60 sha256 aes-128-cbc > "$out/openssl.stdout" 2>&1 &
op=$!; pids+=("$op"); sleep 1
audit openssl-speed "$op"; kill "$op"
wait 2>/dev/null
[ $fail -eq 0 ] && echo "audit: no misses" || echo "audit: MISSES found (see $out/*.json)"
exit $fail

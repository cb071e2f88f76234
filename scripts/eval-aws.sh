#!/usr/bin/env bash
# End-to-end evaluation (issue 5): trace the ISA fixtures, a python3 loop (Debian's
# /usr/bin/python3 and whatever `python3` is on PATH) and redis-server (Debian package), each
# with and without LD_BIND_NOW=1, then `tracer eval` every feature set against the AWS
# catalog: pairs accepted by ours vs CRIU's policies, recall, ours/CRIU ratios.
# Usage: scripts/eval-aws.sh [OUT_DIR]   (root; default OUT_DIR target/eval-aws)
# Prints the instance-type table, the CPU-group table and the table with this host as the
# only source; then, as a separate table, per-source binding for python3 (one trace per
# glibc dispatch signature of the catalog, glibc's view masked with tunables). The feature
# sets, each workload's required features and the JSON tables stay in OUT_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/eval-aws}
mkdir -p "$out" && out=$(cd "$out" && pwd)
cargo build -q -p tracer --bins || exit 2
T=target/debug/tracer
[ -x fixtures/build/isa/dispatch ] || scripts/build-fixtures.sh || exit 2
command -v redis-server > /dev/null || apt-get install -y -q redis-server > /dev/null || exit 2
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2> /dev/null; done; }
trap cleanup EXIT
sets=()

wait_ready() { # file
  for _ in $(seq 100); do grep -qi ready "$1" 2> /dev/null && return 0; sleep 0.1; done
  return 1
}

trace() { # name pid
  local name=$1 pid=$2
  if "$T" --pid "$pid" --json -o "$out/$name.json" 2> "$out/$name.err"; then
    sets+=("$out/$name.json")
    python3 - "$out/$name.json" > "$out/$name.required" << 'PY'
import json, sys
fs = json.load(open(sys.argv[1]))
print(" ".join(f["name"] for f in fs["features"] if f["class"] != "hint"))
PY
    printf '  %-24s %s\n' "$name" "$(cat "$out/$name.required")"
  else
    echo "  $name: tracer failed: $(cat "$out/$name.err")"
  fi
}

run() { # name bind_now cmd...
  local name=$1 bind=$2; shift 2
  local env=(env)
  [ "$bind" = 1 ] && env=(env LD_BIND_NOW=1)
  "${env[@]}" "$@" > "$out/$name.stdout" 2>&1 &
  local p=$!
  pids+=("$p")
  wait_ready "$out/$name.stdout" || sleep 1
  trace "$name" "$p"
  kill "$p" 2> /dev/null
  wait "$p" 2> /dev/null
}

loop='import json, time
print("ready", flush=True)
while True:
    d = {"k%d" % i: [i, str(i) * 3, i / 7] for i in range(2000)}
    s = json.dumps(d); assert json.loads(s) == d; time.sleep(0.01)'

echo "required features (faults/silent) per traced process:"
for f in dead_avx2 fnptr_table dispatch switch_table switch_table_pie sha_thread jit threads8; do
  run "$f" 0 "fixtures/build/isa/$f"
done
run strings 1 fixtures/build/isa/strings
for bind in 0 1; do
  sfx=$([ $bind = 1 ] && echo "-bindnow" || echo "")
  run "python3-debian$sfx" $bind /usr/bin/python3 -c "$loop"
  py=$(command -v python3)
  [ "$(readlink -f "$py")" != "$(readlink -f /usr/bin/python3)" ] && run "python3-path$sfx" $bind "$py" -c "$loop"
  sock="$out/redis$sfx.sock"
  env $([ $bind = 1 ] && echo LD_BIND_NOW=1) redis-server --port 0 --unixsocket "$sock" --save '' --appendonly no > "$out/redis$sfx.stdout" 2>&1 &
  rp=$!; pids+=("$rp")
  for _ in $(seq 50); do redis-cli -s "$sock" ping > /dev/null 2>&1 && break; sleep 0.1; done
  redis-cli -s "$sock" set k v > /dev/null 2>&1
  trace "redis-server$sfx" "$rp"
  kill "$rp"; wait "$rp" 2> /dev/null
done

# What-if: the same python3 as glibc binds it on an AVX2 host without AVX-512 or TSX. The
# tunable masks the features for glibc's selection; -Prefer_No_VZEROUPPER too, because
# glibc sets that preference whenever CPUID lists RTM, masked or not, and then binds its
# SSE2/SSE4.2 string functions, which no real AVX2 host without TSX does (checked: this
# trace needs avx2/bmi2/movbe from __memcmp_avx2_movbe, __strlen_avx2, ...).
run python3-debian-avx2 1 env GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-RTM,-Prefer_No_VZEROUPPER /usr/bin/python3 -c "$loop"

echo
echo "tracer eval --catalog aws (instance types):"
"$T" eval --catalog aws --workload "${sets[@]}" | tee "$out/eval.txt"
"$T" eval --catalog aws --json --workload "${sets[@]}" > "$out/eval.json"
echo
echo "tracer eval --catalog aws --groups (one instance type per CPU group):"
"$T" eval --catalog aws --groups --workload "${sets[@]}" | tee "$out/eval-groups.txt"
echo
echo "tracer eval --catalog aws --source host.json (this host as the only source):"
"$T" host --json > "$out/host.json"
"$T" eval --catalog aws --source "$out/host.json" --workload "${sets[@]}" | tee "$out/eval-this-host.txt"

# Per-source binding (a separate table; the tables above use one trace for every source).
# A process started on source S binds glibc's IFUNCs to S's CPU. scripts/bind-plan.py gives,
# for every dispatch signature of the catalog (vendor and which glibc dispatch features),
# the glibc.cpu.hwcaps tunables that make glibc on this host bind as on S (features S lacks
# hidden, every preferred bit the selectors read set to glibc's value for S's vendor and
# features, checked with `ld.so --list-diagnostics`). Each glibc-bound workload is traced
# once per signature; `tracer eval --bound` refuses a trace that still uses a hidden
# feature and leaves out sources no trace stands for.
echo
echo "tracer eval --catalog aws --bound ... (per-source binding, glibc dispatch):"
python3 scripts/bind-plan.py tracer/data/aws-catalog.json "$out/host.json" > "$out/bind-plan" || exit 1
python3 scripts/bind-plan.py --crypto tracer/data/aws-catalog.json "$out/host.json" > "$out/bind-plan-crypto" || exit 1
per_source() { # glibc|glibc,crypto name cmd...
  local dispatch=$1 name=$2 n=0 vendor hidden ossl tunables plan="$out/bind-plan"
  shift 2
  [ "$dispatch" = glibc ] || plan="$out/bind-plan-crypto"
  local bound=()
  while read -r vendor hidden ossl tunables; do
    n=$((n + 1))
    local env=(env GLIBC_TUNABLES="$tunables")
    [ "$ossl" = - ] || env+=(OPENSSL_ia32cap="$ossl")
    run "$name-bound-$n" 1 "${env[@]}" "$@" < /dev/null
    echo "    ($vendor, hidden: $hidden)"
    [ -f "$out/$name-bound-$n.json" ] && bound+=("$out/$name-bound-$n.json@${hidden/#-/}@$vendor")
  done < "$plan"
  "$T" eval --catalog aws --traced-on "$out/host.json" --dispatch "$dispatch" --bound "${bound[@]}" | tee "$out/eval-per-source-$name.txt"
  "$T" eval --catalog aws --groups --traced-on "$out/host.json" --dispatch "$dispatch" --bound "${bound[@]}" | tee "$out/eval-per-source-groups-$name.txt"
  "$T" eval --catalog aws --json --traced-on "$out/host.json" --dispatch "$dispatch" --bound "${bound[@]}" > "$out/eval-per-source-$name.json"
}
per_source glibc python3 /usr/bin/python3 -c "$loop"
per_source glibc strings fixtures/build/isa/strings
per_source glibc threads8 fixtures/build/isa/threads8
# redis-server: OpenSSL's capability vector masked too (OPENSSL_ia32cap); libgcrypt, loaded
# through libsystemd but never initialised, is left out by the tracer either way.
per_source glibc,crypto redis-server redis-server --port 0 --unixsocket "$out/redis-bound.sock" --save '' --appendonly no

#!/usr/bin/env bash
# Reliability and security checks (issue 10; docs/reliability.md), as root, with a summary table:
#   1. fuzzing with generated inputs (tracer: ELF, decoder, feature-set/catalog JSON, the CLI on
#      corrupt files; migrator: checkpoint images, WASI paths on restore)
#   2. tracer soak: attach/analyze/detach cycles against a checksum process and an 8-thread
#      spinner, and SIGKILLs of the tracer at random moments
#   3. migration fault matrix: migrator/tests/net.rs (kill -9 / cut / corrupt at each step),
#      disk full while writing an image (migrator/tests/diskfull.rs, a 1 MiB tmpfs), and HOPS
#      back-and-forth migrations of one task between two network namespaces
#   4. monitor-probe under storm: page-cache churn and a flapping sensor
#   5. least privilege: each binary with only its capabilities (setpriv), systemd units
#   6. exposure: the migrator's TCP listener (none without a key; loopback unless --listen)
#
# Usage: scripts/reliability.sh [--quick]
#   --quick (or RELIABILITY_QUICK=1): the bounded version run by scripts/test.sh (< 4 min once
#   built). Budgets can be overridden: FUZZ_SECS, SOAK_CYCLES, SOAK_KILLS, STORM_CHURN_MB,
#   STORM_SECS, HOPS, NET_TESTS=0 (skip the fault matrix).
# Logs: target/reliability/*.log. Exit 1 if any check failed.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/two-hosts.sh
quick=${RELIABILITY_QUICK:-0}
[ "${1:-}" = "--quick" ] && quick=1
if [ "$quick" = 1 ]; then
  : "${FUZZ_SECS:=2}" "${SOAK_CYCLES:=20}" "${SOAK_KILLS:=20}" "${STORM_CHURN_MB:=512}" "${STORM_SECS:=8}" "${NET_TESTS:=0}" "${HOPS:=6}"
else
  : "${FUZZ_SECS:=60}" "${SOAK_CYCLES:=1000}" "${SOAK_KILLS:=100}" "${STORM_CHURN_MB:=10240}" "${STORM_SECS:=180}" "${NET_TESTS:=1}" "${HOPS:=100}"
fi
export FUZZ_SECS SOAK_CYCLES SOAK_KILLS STORM_CHURN_MB STORM_SECS
logs=target/reliability
mkdir -p "$logs"
rm -f "$logs"/*.log # the panic count reads every log: none from an earlier run
rows=$logs/rows.tsv
: >"$rows"
status=0
row() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$rows"; }
# kv KEY LINE: the value of KEY=... in a RELIABILITY line.
kv() { sed -n "s/.*[ ]$1=\([^ ]*\).*/\1/p" <<<"$2" | head -1; }
work=$(mktemp -d /tmp/reliability.XXXXXX)
chmod 755 "$work"
spin_pid= serve_pid= hop_pids=() hop_ns=()
cleanup() {
  [ -n "$spin_pid" ] && kill "$spin_pid" 2>/dev/null; [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null
  # ($! of a backgrounded function is its subshell, not the daemon: two_hosts_down stops what
  # runs in the namespaces.)
  [ "${#hop_ns[@]}" -gt 0 ] && two_hosts_down "${hop_ns[@]}"
  for p in "${hop_pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${hop_pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "[reliability] building (tests and binaries)"
cargo build -q -p tracer -p monitor-probe -p migrator --bins
cargo test -q --no-run -p tracer --test fuzz --test soak 2>/dev/null
cargo test -q --no-run -p migrator --test fuzz --test tests 2>/dev/null
cargo test -q --no-run -p monitor-probe --test storm 2>/dev/null

# run NAME CMD...: runs a test command, logs it, records failure.
run() {
  local name=$1; shift
  echo "[reliability] $name"
  if ! "$@" >"$logs/$name.log" 2>&1; then
    echo "[reliability] $name FAILED (see $logs/$name.log)" >&2
    status=1
    return 1
  fi
}

# 1. Fuzzing -----------------------------------------------------------------------------------
run fuzz-tracer cargo test -q -p tracer --test fuzz -- --nocapture --test-threads=1
run fuzz-migrator cargo test -q -p migrator --test fuzz -- --nocapture --test-threads=1
for f in fuzz-tracer fuzz-migrator; do
  grep -ho 'RELIABILITY fuzz .*' "$logs/$f.log" | while read -r l; do
    row "fuzz $(awk '{print $3}' <<<"$l")" "$(kv cases "$l")" "$(kv secs "$l")" "$(kv failures "$l")" "max alloc $(( $(kv max_alloc "$l") / 1048576 )) MiB"
  done
  # A test that aborted (allocation guard) or failed before printing its line.
  if grep -q 'refused an allocation\|FAILED\|panicked' "$logs/$f.log"; then
    row "$f (aborted/failed)" 0 0 1 "see $logs/$f.log"
  fi
done
l=$(grep -ho 'RELIABILITY security path_escape.*' "$logs/fuzz-migrator.log" | head -1)
[ -n "$l" ] && row "restore: paths outside preopens" "$(kv cases "$l")" - "$(kv failures "$l")" "images naming ../, /abs, a/../../"

# 2. Tracer soak ---------------------------------------------------------------------------------
run soak cargo test -q -p tracer --test soak -- --nocapture --test-threads=1
l=$(grep -ho 'RELIABILITY soak .*' "$logs/soak.log" | head -1)
if [ -n "$l" ]; then
  row "tracer attach/analyze/detach" "$(kv cycles "$l")" "$(kv secs "$l")" "$(( $(kv mismatches "$l") + $(kv left_stopped "$l") ))" \
    "left stopped $(kv left_stopped "$l"), checksum mismatches $(kv mismatches "$l") over $(kv checksum_runs "$l") runs"
else
  row "tracer attach/analyze/detach" 0 - 1 "no result line"
fi
l=$(grep -ho 'RELIABILITY kill .*' "$logs/soak.log" | head -1)
if [ -n "$l" ]; then
  row "tracer SIGKILLed at random" "$(kv kills "$l")" "$(kv secs "$l")" "$(( $(kv mismatches "$l") + $(kv left_stopped "$l") ))" \
    "left stopped $(kv left_stopped "$l"), run $(( $(kv run_us "$l") / 1000 )) ms"
else
  row "tracer SIGKILLed at random" 0 - 1 "no result line"
fi

# 3. Migration fault matrix (migrator/tests/net.rs, owned by the network migration work) -----------
if [ "$NET_TESTS" = 1 ] && grep -q '^name = "net"' migrator/Cargo.toml; then
  t0=$SECONDS
  run net cargo test -q -p migrator --test net -- --test-threads=1
  cargo test -q -p migrator --test net -- --list 2>/dev/null | grep ': test$' >"$logs/net.list"
  total=$(wc -l <"$logs/net.list")
  faults=$(grep -c 'killed\|fault\|cut\|corrupt\|garbage\|wrong_key\|oversized\|incompatible\|disk' "$logs/net.list")
  failed=$(sed -n 's/.*; \([0-9]*\) failed.*/\1/p' "$logs/net.log" | tail -1)
  row "migration fault matrix (net.rs)" "$total" "$((SECONDS - t0))" "${failed:-$total}" "$faults of them inject a fault"
else
  row "migration fault matrix (net.rs)" - - - "not run (NET_TESTS=0 or no net test)"
fi

# Disk full while writing an image (a 1 MiB tmpfs; daemon and foreground task).
t0=$SECONDS
run diskfull cargo test -q -p migrator --test tests diskfull -- --nocapture --test-threads=1
disk_attempts=$(grep -ho 'RELIABILITY diskfull .*' "$logs/diskfull.log" | sed 's/.* attempts=\([0-9]*\).*/\1/' | awk '{s += $1} END {print s + 0}')
disk_failed=$(sed -n 's/.*; \([0-9]*\) failed.*/\1/p' "$logs/diskfull.log" | tail -1)
row "disk full while checkpointing (diskfull.rs)" "$disk_attempts" "$((SECONDS - t0))" "${disk_failed:-2}" \
  "2 tasks (daemon, foreground): one-line ENOSPC error, nothing left in the directory, task keeps running, output identical"

# 3b. Back-and-forth migrations between two namespaced hosts ------------------------------------
# Two network namespaces joined by a veth pair, `migrator serve` in each (shared key), one
# matmul task moved A→B→A→… HOPS times with `migrator migrate --json` (--verify when the
# binary has it: source and destination hash the task's state, which must be equal). After
# every hop the task runs on exactly one host. Its output, the per-host log segments in hop
# order, must equal an uninterrupted run's.
hops_section() {
  echo "[reliability] $HOPS back-and-forth migrations"
  local ns=(mig-rel-a mig-rel-b) ip=(10.77.9.1 10.77.9.2) dir=("$work/hop-a" "$work/hop-b") port=9876
  local M=$PWD/target/debug/migrator name=hop t0=$SECONDS
  hop_ns=("${ns[@]}")
  two_hosts_up "${ns[0]}" "${ip[0]}" "${ns[1]}" "${ip[1]}" mig-rel-v
  head -c 32 /dev/urandom | base64 >"$work/hopkey"
  H() { local h=$1; shift; ip netns exec "${ns[$h]}" env MIGRATOR_RUNTIME_DIR="${dir[$h]}" MIGRATION_TOKEN_FILE="$work/hopkey" \
    MIGRATOR_CACHE_DIR="$PWD/target/tmp/migrator-cache" "$M" "$@"; }
  for h in 0 1; do
    H $h serve --listen "${ip[$h]}:$port" 2>"$logs/hops-serve-$h.log" &
    hop_pids+=($!)
  done
  for _ in $(seq 100); do
    [ -S "${dir[0]}/daemon.sock" ] && [ -S "${dir[1]}/daemon.sock" ] && ip netns exec "${ns[0]}" bash -c "exec 3<>/dev/tcp/${ip[1]}/$port" 2>/dev/null \
      && ip netns exec "${ns[1]}" bash -c "exec 3<>/dev/tcp/${ip[0]}/$port" 2>/dev/null && break
    sleep 0.1
  done
  local verify=()
  "$M" migrate --help | grep -q -- '--verify' && verify=(--verify)
  # A task that outlives the hops: matmul 160 for ~2 s per hop + 10 s (a hop takes 0.6 s on an idle
  # 2-core VM, 3 s under a parallel build), calibrated here under the current load.
  local n0 n1 reps
  R() { env MIGRATOR_RUNTIME_DIR="$work/hop-ref" MIGRATOR_CACHE_DIR="$PWD/target/tmp/migrator-cache" "$M" run --name hop-ref "$@"; }
  R fixtures/build/wasm/matmul.wasm -- 160 4 >/dev/null 2>&1 # compile (cached)
  n0=$(date +%s%N)
  R fixtures/build/wasm/matmul.wasm -- 160 40 >/dev/null 2>&1
  n1=$(date +%s%N)
  reps=$(( (HOPS * 2000 + 10000) * 40 / ((n1 - n0) / 1000000 + 1) ))
  R fixtures/build/wasm/matmul.wasm -- 160 "$reps" >"$work/hop.ref" 2>/dev/null &
  local ref_pid=$!
  H 0 run --detach --name $name "$PWD/fixtures/build/wasm/matmul.wasm" -- 160 "$reps" >/dev/null
  # state H: the task's state on host H (empty if it has none).
  state() { H "$1" ps --json | sed -n "s/.*{\"name\":\"$name\",\"state\":\"\([a-z-]*\)\".*/\1/p"; }
  # where: the hosts (0, 1) on which the task is running.
  where() { for h in 0 1; do [ "$(state $h)" = running ] && echo $h; done; }
  local off=(0 0) holder=0 hop failures=0 lost=0 twice=0 verified=0 on rep size
  : >"$work/hop.downtime"
  : >"$work/hop.out"
  # segment H: appends what host H's log gained since its last segment.
  local nonempty=0
  segment() { size=$(stat -c %s "${dir[$1]}/logs/$name.stdout" 2>/dev/null || echo 0)
    [ "$size" -gt "${off[$1]}" ] && nonempty=$((nonempty + 1))
    tail -c +$((off[$1] + 1)) "${dir[$1]}/logs/$name.stdout" 2>/dev/null | head -c $((size - off[$1])) >>"$work/hop.out"; off[$1]=$size; }
  for hop in $(seq "$HOPS"); do
    local to=$((1 - holder)) h0
    h0=$(date +%s%N)
    if ! rep=$(H $holder migrate --json --timeout 10 "${verify[@]}" --task $name --to "${ip[$to]}:$port" 2>>"$logs/hops.log"); then
      echo "hop $hop: migrate ${holder}->${to} failed" >>"$logs/hops.log"; failures=$((failures + 1))
    else
      # The downtime; with --verify, exit 1 unless both state hashes are there and equal.
      if python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["downtime_ms"]); sys.exit(sys.argv[2] == "1" and not (r.get("state_hash") and r.get("state_hash") == r.get("dest_state_hash")))' \
          "$rep" ${#verify[@]} >>"$work/hop.downtime"; then
        [ ${#verify[@]} = 1 ] && verified=$((verified + 1))
      else
        echo "hop $hop: state hash mismatch: $rep" >>"$logs/hops.log"; failures=$((failures + 1))
      fi
    fi
    on=$(where | tr -d '\n')
    case "$on" in
      "$to") segment "$holder"; holder=$to ;;
      "$holder") ;;
      "") echo "hop $hop: the task runs on no host" >>"$logs/hops.log"; lost=1; failures=$((failures + 1)); break ;;
      *) echo "hop $hop: the task runs on both hosts" >>"$logs/hops.log"; twice=1; failures=$((failures + 1)); break ;;
    esac
    echo "hop $hop: on host $holder after $(( ($(date +%s%N) - h0) / 1000000 )) ms, $nonempty visits with output so far" >>"$logs/hops.log"
  done
  local done_hops=$hop
  # The end: the task finishes on its last host (about when the uninterrupted run, started
  # with it, does).
  wait "$ref_pid"
  for _ in $(seq 300); do
    [ "$(state $holder)" = running ] || break
    sleep 0.4
  done
  segment "$holder"
  # Done with both hosts: stop their daemons and remove them now rather than at exit.
  two_hosts_down "${ns[@]}"
  local dup missing
  dup=$(sort "$work/hop.out" | uniq -d | wc -l)
  missing=$(comm -23 <(sort "$work/hop.ref") <(sort "$work/hop.out") | wc -l)
  [ "$dup" -gt 0 ] && twice=1
  [ "$missing" -gt 0 ] && lost=1
  if ! cmp -s "$work/hop.out" "$work/hop.ref"; then
    echo "output differs from the uninterrupted run: $dup duplicated lines, $missing missing" >>"$logs/hops.log"; failures=$((failures + 1))
  fi
  hop_lost=$lost hop_twice=$twice
  row "back-and-forth migrations (namespaces)" "$done_hops" "$((SECONDS - t0))" "$failures" \
    "lost $lost / run twice $twice; state hash equal at $verified hops${verify[0]:+ (--verify)}; downtime $(sort -n "$work/hop.downtime" | awk '{v[NR] = $1} END {printf "median %.1f ms, max %.1f ms", v[int((NR + 1) / 2)], v[NR]}'); output $(wc -l <"$work/hop.ref") lines from $nonempty visits, $(cmp -s "$work/hop.out" "$work/hop.ref" && echo identical || echo DIFFERENT)"
  [ "$failures" = 0 ] || status=1
}
hops_section

# 4. Monitor storm ----------------------------------------------------------------------------
run storm cargo test -q -p monitor-probe --test storm -- --nocapture
l=$(grep -ho 'RELIABILITY storm .*' "$logs/storm.log" | head -1)
if [ -n "$l" ]; then
  row "monitor storm" "$(kv churn_mb "$l") MiB" "$(kv churn_secs "$l")" "$(grep -q 'test result: ok' "$logs/storm.log" && echo 0 || echo 1)" \
    "$(kv sensor_flips "$l") sensor flips ($(kv flips_per_s "$l")/s), triggers pc $(kv page_cache_triggers "$l")/temp $(kv temperature_triggers "$l") (≤ $(kv allowed_per_metric "$l")), peak RSS $(( $(kv peak_rss_kb "$l") / 1024 )) MiB, dropped $(kv dropped "$l") (counted)"
else
  row "monitor storm" 0 - 1 "no result line"
fi

# 5. Least privilege --------------------------------------------------------------------------
echo "[reliability] least privilege"
priv_fail=0 priv_cases=0
# Copies readable by `nobody`.
cp target/debug/tracer target/debug/monitor-probe target/debug/migrator "$work/"
cp fixtures/build/wasm/hashchain.wasm "$work/" && chmod 644 "$work/hashchain.wasm"
caps() { local c=$1; shift; setpriv --inh-caps=-all$c --ambient-caps=-all$c --bounding-set=-all$c "$@"; }
check() { # check NAME EXPECTED_RC CMD... : runs CMD, compares exit code
  local name=$1 want=$2; shift 2
  priv_cases=$((priv_cases + 1))
  "$@" >"$work/out" 2>"$work/err"; local rc=$?
  if [ "$rc" != "$want" ]; then
    echo "[reliability] privilege check '$name': exit $rc, wanted $want: $(head -c 300 "$work/err")" >&2
    priv_fail=$((priv_fail + 1)); return 1
  fi
  if [ "$want" = 2 ] && [ "$(wc -l <"$work/err")" != 1 ]; then
    echo "[reliability] privilege check '$name': error is not one line: $(cat "$work/err")" >&2
    priv_fail=$((priv_fail + 1)); return 1
  fi
}
fixtures/build/isa/threads8 >/dev/null &
spin_pid=$!
sleep 0.3
"$work/tracer" --pid $spin_pid --json -o "$work/full.json"
check "tracer: uid 0 + CAP_SYS_PTRACE only" 0 caps ,+sys_ptrace "$work/tracer" --pid $spin_pid --json -o "$work/ptrace.json"
names() { python3 -c 'import json,sys; print(" ".join(sorted(f["name"] for f in json.load(open(sys.argv[1]))["features"])))' "$1"; }
if [ "$(names "$work/full.json")" != "$(names "$work/ptrace.json" 2>/dev/null)" ]; then
  echo "[reliability] tracer with CAP_SYS_PTRACE only reports other features than as full root" >&2
  priv_fail=$((priv_fail + 1))
fi
check "tracer: no capabilities (nobody)" 2 caps "" --reuid=nobody --regid=nogroup --clear-groups "$work/tracer" --pid $spin_pid --json
grep -q 'CAP_SYS_PTRACE' "$work/err" || { echo "[reliability] tracer's permission error does not name CAP_SYS_PTRACE: $(cat "$work/err")" >&2; priv_fail=$((priv_fail + 1)); }
check "tracer: uid 0, no capabilities" 2 caps "" "$work/tracer" --pid $spin_pid --json
kill $spin_pid; wait $spin_pid 2>/dev/null; spin_pid=
check "monitor-probe: uid 0 + CAP_BPF + CAP_PERFMON only" 0 caps ,+bpf,+perfmon "$work/monitor-probe" --sysfs-root fixtures/sysfs/hot --interval 0.2 --duration 1
grep -q '^\[Migration Trigger\] Threshold exceeded! temperature' "$work/out" || { echo "[reliability] monitor-probe with CAP_BPF+CAP_PERFMON: no trigger" >&2; priv_fail=$((priv_fail + 1)); }
check "monitor-probe: CAP_BPF only" 2 caps ,+bpf "$work/monitor-probe" --sysfs-root fixtures/sysfs/hot --interval 0.2 --duration 1
check "monitor-probe: no capabilities" 2 caps "" "$work/monitor-probe" --sysfs-root fixtures/sysfs/hot --interval 0.2 --duration 1
grep -q 'CAP_BPF' "$work/err" || { echo "[reliability] monitor-probe's permission error does not name CAP_BPF" >&2; priv_fail=$((priv_fail + 1)); }
mkdir -p "$work/nobody" && chown nobody "$work/nobody"
check "migrator: nobody, no capabilities" 0 caps "" --reuid=nobody --regid=nogroup --clear-groups \
  env MIGRATOR_RUNTIME_DIR="$work/nobody/run" MIGRATOR_CACHE_DIR="$work/nobody/cache" HOME="$work/nobody" "$work/migrator" run "$work/hashchain.wasm" -- 3000
"$work/migrator" run "$work/hashchain.wasm" -- 3000 >"$work/root.out" 2>/dev/null
cmp -s "$work/out" "$work/root.out" || { echo "[reliability] migrator as nobody: output differs" >&2; priv_fail=$((priv_fail + 1)); }
if command -v systemd-analyze >/dev/null; then
  mkdir -p "$work/units"
  for u in scripts/systemd/*.service; do
    b=$(basename "$u"); [ "$b" = "tracer@.service" ] && b=tracer@1.service
    sed 's|^ExecStart=.*|ExecStart=/bin/true|; s|^LoadCredential=.*||' "$u" >"$work/units/$b"
  done
  check "systemd units verify" 0 sh -c "cd '$work/units' && systemd-analyze verify ./*.service && ! systemd-analyze verify ./*.service 2>&1 | grep -q ."
  for pair in "tracer@.service:CAP_SYS_PTRACE" "monitor-probe.service:CAP_BPF CAP_PERFMON" "migrator.service:"; do
    u=${pair%%:*} want=${pair#*:}
    priv_cases=$((priv_cases + 1))
    got=$(sed -n 's/^CapabilityBoundingSet=//p' "scripts/systemd/$u")
    [ "$got" = "$want" ] || { echo "[reliability] $u: CapabilityBoundingSet=$got, wanted $want" >&2; priv_fail=$((priv_fail + 1)); }
  done
fi
row "least privilege (setpriv, units)" "$priv_cases" - "$priv_fail" "tracer: CAP_SYS_PTRACE; monitor-probe: CAP_BPF+CAP_PERFMON; migrator: none"
[ "$priv_fail" = 0 ] || status=1

# 6. Exposure: the migrator's TCP listener -------------------------------------------------------
echo "[reliability] exposure"
exp_fail=0 exp_cases=0
port=$((20000 + RANDOM % 20000))
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/key"
listening() { ss -Hltn "sport = :$port" | awk '{print $4}'; }
serve() { # serve WITH_KEY ARGS...: starts `migrator serve`, prints its listening addresses
  local key=$1; shift
  env MIGRATOR_RUNTIME_DIR="$work/srv" MIGRATION_PORT=$port ${key:+MIGRATION_TOKEN_FILE=$work/key} \
    "$work/migrator" serve --host-features tracer/tests/fixtures_check/host-skylake.json "$@" >"$work/serve.log" 2>&1 &
  serve_pid=$!
  for _ in $(seq 50); do [ -S "$work/srv/daemon.sock" ] && break; kill -0 $serve_pid 2>/dev/null || break; sleep 0.1; done
  sleep 0.3
}
unserve() { kill "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null; serve_pid=; rm -rf "$work/srv"; }
expect() { exp_cases=$((exp_cases + 1)); [ "$1" = "$2" ] || { echo "[reliability] exposure '$3': listening on '$1', wanted '$2'" >&2; exp_fail=$((exp_fail + 1)); }; }
serve ""; expect "$(listening)" "" "no key: no TCP listener"; unserve
serve 1; expect "$(listening)" "127.0.0.1:$port" "key: loopback only"; unserve
serve "" --listen "0.0.0.0:$port"
exp_cases=$((exp_cases + 1))
if kill -0 "$serve_pid" 2>/dev/null || [ -n "$(listening)" ]; then
  echo "[reliability] exposure: --listen without a key was not refused" >&2; exp_fail=$((exp_fail + 1))
fi
unserve
serve 1 --listen "0.0.0.0:$port"; expect "$(listening)" "0.0.0.0:$port" "explicit --listen with key"; unserve
row "exposure (migrator listener)" "$exp_cases" - "$exp_fail" "no key: none; key: 127.0.0.1 only; --listen without key refused"
[ "$exp_fail" = 0 ] || status=1

# Summary -------------------------------------------------------------------------------------
fuzz_cases=$(awk -F'\t' '$1 ~ /^fuzz / {s += $2} END {print s + 0}' "$rows")
fuzz_secs=$(awk -F'\t' '$1 ~ /^fuzz / {s += $3} END {printf "%.0f", s}' "$rows")
panics=$(cat "$logs"/*.log | grep -c 'panicked at\|fuzz: panic:\|refused an allocation')
stopped=$(grep -ho 'left_stopped=[0-9]*' "$logs/soak.log" | awk -F= '{s += $2} END {print s + 0}')
net_row=$(awk -F'\t' '$1 ~ /^migration fault/' "$rows")
net_faults=$(sed -n 's/.*\t\([0-9]*\) of them inject a fault$/\1/p' <<<"$net_row")
net_failed=$(cut -f4 <<<"$net_row")
kills=$(grep -ho 'RELIABILITY kill kills=[0-9]*' "$logs/soak.log" | sed 's/.*=//')
faults=$(( ${kills:-0} + ${net_faults:-0} + disk_attempts ))
# Lost / run twice: measured by the hops (per hop and on the output); a failing fault-matrix or
# disk-full test (each checks both) is added to both, as it may be either.
fault_tests_failed=$(( ${disk_failed:-2} + $( [ "$net_failed" = - ] && echo 0 || echo "${net_failed:-0}") ))
lost=$(( hop_lost + fault_tests_failed )) twice=$(( hop_twice + fault_tests_failed ))

echo
echo "| check | cases | seconds | failures | notes |"
echo "|---|---|---|---|---|"
awk -F'\t' '{printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5}' "$rows"
echo
echo "| inputs fuzzed | fuzzing seconds | faults injected | tasks lost | tasks run twice | targets left stopped | panics |"
echo "|---|---|---|---|---|---|---|"
echo "| $fuzz_cases | $fuzz_secs | $faults | $lost | $twice | $stopped | $panics |"
echo
echo "Faults: ${kills:-0} tracer SIGKILLs + ${net_faults:-0} migration fault tests$([ "$net_failed" = - ] && echo ' (fault matrix not run: NET_TESTS=0)')" \
  "+ $disk_attempts disk-full checkpoints. Lost / run twice: over the fault tests and $HOPS back-and-forth migrations" \
  "(lost $hop_lost, run twice $hop_twice)$([ "$fault_tests_failed" -gt 0 ] && echo ", plus $fault_tests_failed failing fault test(s): see $logs/net.log, $logs/diskfull.log")."
[ "$status" = 0 ] && [ "$panics" = 0 ] && [ "$stopped" = 0 ] && [ "$lost" = 0 ] && [ "$twice" = 0 ] || { echo "[reliability] FAILED" >&2; exit 1; }
echo "[reliability] ok"

#!/usr/bin/env bash
# Tracer benchmarks (issue 4). Prints figures; needs root. Installs what it needs.
#   pause:      p50/p99 target pause over N attaches to an 8-thread process (+ GDB attach baseline)
#   throughput: full scan of libc + python3 code, MB/s, side by side with elfx86exts (capstone)
#   python:     path-mode analysis of a running python3, wall time end to end
#   memory:     peak RSS of the tracer for those runs
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-50}
scripts/setup.sh >/dev/null
command -v gdb >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gdb >/dev/null
fixtures/isa/build.sh >/dev/null
cargo build -q -p tracer
T=target/debug/tracer
TOOLS=${TOOLS:-$PWD/target/bench-tools}
if [ ! -x "$TOOLS/bin/elfx86exts" ]; then
  echo "[bench] installing elfx86exts (crates.io) into $TOOLS" >&2
  cargo install -q elfx86exts --root "$TOOLS" >&2
fi
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int((NR*p+99)/100); if(i<1)i=1; print a[i]}'; }

echo "== pause of an 8-thread process over $N attaches (tracer --pid, path mode)"
fixtures/build/isa/threads8 > "$tmp/t8.out" & pids+=($!); T8=$!
sleep 0.3
for i in $(seq "$N"); do
  $T --pid "$T8" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["pause_us"])'
done > "$tmp/pause"
p50=$(pct 50 < "$tmp/pause"); p99=$(pct 99 < "$tmp/pause"); max=$(pct 100 < "$tmp/pause")
echo "tracer pause: p50 ${p50} us, p99 ${p99} us, max ${max} us (target p99 < 5000 us)"
for i in 1 2 3 4 5; do
  s=$(date +%s%N); gdb -p "$T8" -batch -nx -ex detach >/dev/null 2>&1 || true; e=$(date +%s%N)
  echo $(( (e - s) / 1000 ))
done > "$tmp/gdb"
g50=$(pct 50 < "$tmp/gdb")
echo "baseline gdb -p attach+detach (process stopped for most of it): p50 ${g50} us over 5 runs; ratio gdb/tracer p50 = $(( g50 / (p50 > 0 ? p50 : 1) ))x"

echo
echo "== full-scan throughput: libc + python3 executable code"
LIBC=$(ldconfig -p | awk '/libc.so.6 .*x86-64/ {print $NF; exit}')
PY=$(readlink -f /usr/bin/python3)
files=("$LIBC" "$PY")
code_bytes=$($T scan "${files[@]}" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["stats"]["code_bytes_mapped"])')
cat "${files[@]}" > /dev/null  # warm the page cache for both tools
tt() { local s e; s=$(date +%s%N); "$@" > /dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000 )); }
for i in 1 2 3 4 5; do tt $T scan "${files[@]}" --threads 1; done > "$tmp/scan1"
for i in 1 2 3 4 5; do tt $T scan "${files[@]}" --threads 2; done > "$tmp/scan2"
for i in 1 2 3; do s=$(date +%s%N); for f in "${files[@]}"; do "$TOOLS/bin/elfx86exts" "$f" > /dev/null 2>&1; done; e=$(date +%s%N); echo $(( (e - s) / 1000 )); done > "$tmp/elfx"
s1=$(pct 50 < "$tmp/scan1"); s2=$(pct 50 < "$tmp/scan2"); ex=$(pct 50 < "$tmp/elfx")
mbps() { python3 -c "print(f'{$code_bytes/1e6/($1/1e6):.1f}')"; }
echo "code: $(( code_bytes / 1024 )) KiB in ${files[*]}"
echo "tracer scan, 1 thread : ${s1} us  $(mbps "$s1") MB/s"
echo "tracer scan, 2 threads: ${s2} us  $(mbps "$s2") MB/s"
echo "elfx86exts (capstone) : ${ex} us  $(mbps "$ex") MB/s"
python3 -c "print(f'speed ratio tracer/elfx86exts: 1 thread {$ex/$s1:.1f}x, 2 threads {$ex/$s2:.1f}x (target >= 3x)')"

echo
echo "== path-mode analysis of a running python3 (wall time end to end, peak RSS)"
/usr/bin/python3 -c 'import time, json, hashlib
while True: hashlib.sha256(b"x"*1000).hexdigest(); time.sleep(0.01)' & pids+=($!); PYP=$!
sleep 0.5
for i in 1 2 3 4 5; do
  /usr/bin/time -f "%e %M" -o "$tmp/time.$i" $T --pid "$PYP" --json -o "$tmp/py.json"
  cat "$tmp/time.$i"
done > "$tmp/py"
wall=$(awk '{print $1}' "$tmp/py" | pct 50); rss=$(awk '{print $2}' "$tmp/py" | pct 100)
echo "python3 path mode: p50 wall ${wall} s over 5 runs (target < 1 s), peak RSS ${rss} KiB"
python3 - "$tmp/py.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["stats"]
print(f"  pause {s['pause_us']} us, analysis {s['analysis_ms']} ms, decoded {s['bytes_decoded']//1024} KiB of {s['code_bytes_mapped']//1024} KiB mapped code, "
      f"unresolved register-indirect sites {s['path']['indirect_unresolved']}")
print("  required:", " ".join(f["name"] for f in d["features"] if f["class"] != "hint"))
PY
/usr/bin/time -f "%e %M" -o "$tmp/full" $T --pid "$PYP" --mode full --json -o /dev/null
echo "python3 full mode: wall $(cut -d' ' -f1 "$tmp/full") s, peak RSS $(cut -d' ' -f2 "$tmp/full") KiB"
/usr/bin/time -f "%e %M" -o "$tmp/scanrss" $T scan "${files[@]}" > /dev/null
echo "tracer scan libc+python3: peak RSS $(cut -d' ' -f2 "$tmp/scanrss") KiB"
/usr/bin/time -f "%e %M" -o "$tmp/t8rss" $T --pid "$T8" > /dev/null
echo "tracer on threads8: peak RSS $(cut -d' ' -f2 "$tmp/t8rss") KiB"

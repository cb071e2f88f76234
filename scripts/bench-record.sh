#!/usr/bin/env bash
# Benchmarks for issue 6: (1) `tracer record` slowdown — loop iterations per second of
# fixtures/python/rate.py untraced vs while recorded (single-step, branch-step, sampling
# at 100 Hz and 1 kHz); (2) time of the Python-aware analysis on the numpy workload
# (path mode with --python auto vs off, and full mode), 3 runs each.
# Usage: scripts/bench-record.sh [SECS]   (needs root; builds the release tracer)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-4}
cargo build --release -q -p tracer
[ -x fixtures/build/python/venv/bin/python3 ] || fixtures/python/build.sh
python3 - "$secs" <<'PY'
import json, subprocess, sys, threading, time
secs = float(sys.argv[1])
T = "target/release/tracer"

def rate_run(args):
    p = subprocess.Popen(["/usr/bin/python3", "fixtures/python/rate.py"], stdout=subprocess.PIPE, text=True)
    lines = []
    def reader():
        for l in p.stdout:
            lines.append((time.monotonic(), l.split()))
    th = threading.Thread(target=reader, daemon=True); th.start()
    while not lines: time.sleep(0.05)
    time.sleep(2.6)
    t0 = time.monotonic()
    base = [int(w[1]) for (t, w) in lines if w[0] == "rate" and t > t0 - 2.0]
    if args is None:
        traced, out = None, None
    else:
        s = time.monotonic()
        out = subprocess.run([T, "record", "--pid", str(p.pid), "--duration", str(secs), "--json"] + args, capture_output=True, text=True)
        e = time.monotonic()
        # A line is printed at the end of its 0.5 s window: keep windows fully inside.
        traced = [int(w[1]) for (t, w) in lines if w[0] == "rate" and s + 0.6 < t <= e]
        time.sleep(1.2)
    after = [int(w[1]) for (t, w) in lines[-2:] if w[0] == "rate"]
    alive = p.poll() is None
    p.kill(); p.wait()
    return base, traced, after, alive, out

print("record slowdown (fixtures/python/rate.py loop iterations per second):")
for name, args in [("single-step", []), ("branch-step", ["--block"]), ("sample 100 Hz", ["--sample", "100"]), ("sample 1 kHz", ["--sample", "1000"])]:
    base, traced, after, alive, out = rate_run(args)
    b = sum(base) / len(base)
    st = json.loads(out.stdout)["stats"]["record"] if out and out.returncode == 0 else {}
    if traced:
        # Median window: the first and last windows may be partly untraced (the tracer
        # loads the image before it attaches and renders JSON after it detaches).
        r = sorted(traced)[len(traced) // 2]
        print(f"  {name:<14} untraced {b:>12.0f}/s  recorded {r:>10.1f}/s  slowdown x{b / max(r, 1e-9):,.0f}  "
              f"(stops {st.get('stops')}, {st.get('stops', 0) / secs:,.0f}/s; alive after: {alive}, rate after {after})")
    else:
        print(f"  {name:<14} untraced {b:>12.0f}/s  recorded: no full 0.5 s window completed in {secs} s "
              f"(slowdown > x{b * 0.5 / 1:,.0f}; stops {st.get('stops')}; alive after: {alive}, rate after {after})")

print("Python-aware analysis on the numpy workload:")
p = subprocess.Popen(["fixtures/build/python/venv/bin/python3", "fixtures/python/numpy_work.py"], stdout=subprocess.PIPE, text=True)
print("  " + p.stdout.readline().strip())
try:
    for label, args in [("path --python auto", ["--python", "auto"]), ("path --python off", ["--python", "off"]), ("full", ["--mode", "full"])]:
        runs = []
        for _ in range(3):
            s = time.monotonic()
            d = json.loads(subprocess.run([T, "--pid", str(p.pid), "--json"] + args, capture_output=True, text=True, check=True).stdout)
            runs.append((time.monotonic() - s, d))
        wall = sorted(r[0] for r in runs)[1]
        d = runs[-1][1]
        py = d["stats"].get("python", {})
        extra = f", python analysis {sorted(r[1]['stats'].get('python', {}).get('analysis_ms', 0) for r in runs)[1]} ms, {py.get('roots')} roots, {py.get('skipped_table_words')} table words skipped" if py else ""
        req = sum(1 for f in d["features"] if f["class"] != "hint")
        print(f"  {label:<20} wall {wall * 1000:.0f} ms (median of 3), analysis {d['stats']['analysis_ms']} ms, "
              f"{len(d['features'])} features ({req} required){extra}")
finally:
    p.kill(); p.wait()
PY

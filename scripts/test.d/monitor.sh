#!/usr/bin/env bash
# Bounded smoke run of monitor-probe (as root): a short human-output run with the hot fake
# sysfs tree must print the [Monitor] line and a temperature trigger, then a short benchmark.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p monitor-probe
out=$(target/debug/monitor-probe --sysfs-root fixtures/sysfs/hot --interval 0.2 --duration 1)
grep -q '^\[Monitor\] Cache: .* MB, Temp: 85.0°C, Memory: .*%$' <<<"$out" || { echo "[monitor] no [Monitor] line: $out" >&2; exit 1; }
grep -q '^\[Migration Trigger\] Threshold exceeded! temperature 85 °C >= 80 °C$' <<<"$out" || { echo "[monitor] no trigger line: $out" >&2; exit 1; }
BENCH_SECS=5 TRIALS=2 FILE_MB=256 monitor-probe/bench/bench-monitor.sh
echo "[monitor] smoke ok"

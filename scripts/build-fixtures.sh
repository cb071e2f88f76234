#!/usr/bin/env bash
# Builds every fixture (native ISA programs, WASM workloads, ...) into fixtures/build/.
# Each fixture area has its own build.sh; this runs them all.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p fixtures/build
for b in fixtures/*/build.sh; do
  [ -x "$b" ] || continue
  echo "[fixtures] $b"
  "$b"
done

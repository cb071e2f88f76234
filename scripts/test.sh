#!/usr/bin/env bash
# Sets up a fresh machine and runs every test. This is the README's test command;
# .ci/run calls it. Tests that need root run as root (CI is root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build-fixtures.sh
cargo build --workspace --bins
cargo test --workspace -- --test-threads=1
# Bounded reliability / benchmark smoke runs, when present.
for s in scripts/test.d/*.sh; do
  [ -x "$s" ] || continue
  echo "[test] $s"
  "$s"
done
echo "[test] all tests passed"

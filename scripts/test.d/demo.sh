#!/usr/bin/env bash
# Bounded smoke run of the end-to-end demo (scripts/demo.sh): two network-namespace hosts,
# a page-cache trigger from monitor-probe, the task moved to the Pulley host and finished there
# with output identical to an uninterrupted run. Short task (about 1.3 s on A, so the monitor
# samples every 0.2 s to trigger well before it ends), no setup (test.sh did it); < 3 min.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEMO_SKIP_SETUP=1 DEMO_ROUNDS=${DEMO_ROUNDS:-250000} DEMO_FILE_MB=300 DEMO_INTERVAL=0.2 timeout 170 scripts/demo.sh 2>&1 | grep -E '^\[demo\]|\[Migration' | grep -v '^\[A monitor\]'
echo "[demo] smoke ok"

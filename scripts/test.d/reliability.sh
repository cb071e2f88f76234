#!/usr/bin/env bash
# Bounded reliability run (issue 10): scripts/reliability.sh --quick — a few seconds of fuzzing
# per target, 20 tracer attach cycles and 20 SIGKILLs, disk-full checkpoints, 6 back-and-forth
# migrations between two namespaces, a 512 MiB page-cache storm, the least-privilege and
# exposure checks; prints the summary table. The full run (1000 cycles, 100 kills, 100 hops,
# 10 GiB of churn, a minute of fuzzing per target, the migration fault matrix) is
# scripts/reliability.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec scripts/reliability.sh --quick

#!/usr/bin/env bash
# monitor-probe benchmark (issue 7): eBPF vs a 1 s /proc/meminfo poller, side by side.
exec "$(dirname "$0")/../monitor-probe/bench/bench-monitor.sh" "$@"

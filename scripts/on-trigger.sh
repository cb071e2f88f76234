#!/usr/bin/env bash
# monitor-probe --exec scripts/on-trigger.sh: move work away when this host is in trouble.
# The event arrives on stdin (one JSON line) and in MONITOR_* variables (docs/monitor.md).
# With TASK_ID set, that task moves to ARM_MIGRATION_HOST (candidates A,B,C allowed);
# otherwise the event goes to the local migrator daemon, which picks the task (priority,
# then largest memory) and the destination (serve --migrate-to, else ARM_MIGRATION_HOST).
set -euo pipefail
M=${MIGRATOR:-migrator}
echo "[on-trigger] $MONITOR_METRIC=$MONITOR_VALUE$MONITOR_UNIT (limit $MONITOR_THRESHOLD) on ${MONITOR_HOST:-?}"
if [ -n "${TASK_ID:-}" ]; then
  exec "$M" migrate --task "$TASK_ID" --to "${ARM_MIGRATION_HOST:?set ARM_MIGRATION_HOST}" ${MIGRATE_LIVE:+--live}
fi
sock=${MIGRATOR_RUNTIME_DIR:-${XDG_RUNTIME_DIR:+$XDG_RUNTIME_DIR/migrator}}
sock=${sock:-/tmp/migrator-$(id -u)}/daemon.sock
exec python3 - "$sock" "$MONITOR_EVENT_JSON" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall((json.dumps({"cmd": "trigger", "event": json.loads(sys.argv[2])}) + "\n").encode())
print("[on-trigger] migrator:", s.makefile().readline().strip())
PY

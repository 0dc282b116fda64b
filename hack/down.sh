#!/usr/bin/env bash
# Stops the control plane hack/up.sh started: every component, and its directory.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${TUSK_UP_DIR:-$PWD/target/tusk-up}"
if [[ ! -f "$STATE.pid" ]] || ! kill -0 "$(cat "$STATE.pid")" 2>/dev/null; then
  echo "No control plane is running."
  rm -f "$STATE.pid"
  exit 0
fi
pid=$(cat "$STATE.pid")
kill -TERM "$pid"
for _ in $(seq 300); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
  echo "The control plane did not stop in 30 s; killing it." >&2
  kill -KILL "$pid"
fi
# The components stop when their owner is gone; wait for the directory to be removed.
for _ in $(seq 300); do
  [[ -d "$STATE" ]] || break
  sleep 0.1
done
rm -f "$STATE.pid"
echo "The control plane is stopped."

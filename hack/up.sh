#!/usr/bin/env bash
# Starts Tusk's local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler
# and kwok with one fake Node, all on 127.0.0.1) in the background, and says how to use kubectl
# with it. hack/down.sh stops it. The first run builds the toolchain (see hack/testbin.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${TUSK_UP_DIR:-$PWD/target/tusk-up}"

if [[ -f "$STATE.pid" ]] && kill -0 "$(cat "$STATE.pid")" 2>/dev/null; then
  echo "The control plane is already running (pid $(cat "$STATE.pid")); hack/down.sh stops it." >&2
  exit 1
fi
TESTBIN=$(hack/testbin.sh | sed -n 's/^TUSK_TESTBIN=//p')
cargo build --quiet -p tusk-testenv --bin tusk-testenv
rm -rf "$STATE"
mkdir -p "$(dirname "$STATE")"
setsid nohup target/debug/tusk-testenv up --dir "$STATE" >"$STATE.log" 2>&1 </dev/null &
echo $! >"$STATE.pid"
for _ in $(seq 1200); do
  [[ -f "$STATE/ready" ]] && break
  if ! kill -0 "$(cat "$STATE.pid")" 2>/dev/null; then
    echo "The control plane did not start; its log ($STATE.log) ends with:" >&2
    tail -n 30 "$STATE.log" >&2
    rm -f "$STATE.pid"
    exit 1
  fi
  sleep 0.25
done
[[ -f "$STATE/ready" ]] || { echo "The control plane was not ready after 5 minutes; see $STATE.log" >&2; exit 1; }

cat <<MSG
The control plane is up (logs: $STATE/logs/, $STATE.log).

  export KUBECONFIG=$STATE/kubeconfig
  export PATH=$TESTBIN/bin:\$PATH   # kubectl, built by hack/testbin.sh
  kubectl get nodes
  cargo run -- crd | kubectl apply -f -   # Tusk's CRDs

Stop it with hack/down.sh.
MSG

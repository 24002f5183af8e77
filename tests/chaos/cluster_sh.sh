#!/usr/bin/env bash
# scripts/cluster.sh end to end: up 2, status, an inference, kill a worker
# and see it reported down, add a worker, down. Runs in a temporary state
# directory on free ports, and always tears the cluster down (trap), killing
# by pid whatever the script's own 'down' left.
set -euo pipefail

: "${SHOALD:?SHOALD must point at the shoald binary}"
: "${SHOALCTL:?SHOALCTL must point at the shoalctl binary}"
PYTHON=${PYTHON:-/usr/bin/python3}
SCRIPT="$(cd "$(dirname "$0")/../.." && pwd)/scripts/cluster.sh"

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

export SHOALD SHOALCTL
CLUSTER_DIR=$(mktemp -d /tmp/shoal-cluster-test-XXXXXX)
CLUSTER_PORT=$(free_port)
CLUSTER_LINK_PORT=$(free_port)
CLUSTER_HTTP_PORT=$(free_port)
CLUSTER_START_TIMEOUT=20
CLUSTER_STOP_TIMEOUT=3
export CLUSTER_DIR CLUSTER_PORT CLUSTER_LINK_PORT CLUSTER_HTTP_PORT \
  CLUSTER_START_TIMEOUT CLUSTER_STOP_TIMEOUT
ENDPOINT=tcp://127.0.0.1:$CLUSTER_PORT

# Every pid the cluster ever had, so cleanup can kill what 'down' missed.
SEEN_PIDS=()
remember_pids() {
  local f
  for f in "$CLUSTER_DIR"/nodes/*.pid; do
    [[ -e $f ]] && SEEN_PIDS+=("$(<"$f")")
  done
  return 0
}

# A pid counts as alive when it is not a zombie: the nodes are not our
# children (cluster.sh starts them in their own sessions), so nobody here
# reaps them.
alive() {
  [[ -r /proc/$1/stat ]] && [[ $(awk '{print $3}' /proc/"$1"/stat 2>/dev/null) != Z ]]
}

cleanup() {
  local rc=$?
  set +e
  remember_pids
  bash "$SCRIPT" down >/dev/null 2>&1
  for p in "${SEEN_PIDS[@]}"; do
    # Only our shoald processes: the pid could have been reused.
    if alive "$p" && tr '\0' ' ' </proc/"$p"/cmdline | grep -qF "$CLUSTER_DIR"; then
      kill -KILL "$p" 2>/dev/null
    fi
  done
  if [[ $rc -ne 0 ]]; then
    for log in "$CLUSTER_DIR"/nodes/*.log; do
      [[ -e $log ]] || continue
      echo "---- $(basename "$log") ----"
      tail -n 80 "$log"
    done
  fi
  rm -rf "$CLUSTER_DIR"
  exit $rc
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*"
  exit 1
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# state NODE: the state the head reports for it, or nothing.
state() {
  "$SHOALCTL" --endpoint "$ENDPOINT" --timeout-ms 500 --json status 2>/dev/null |
    "$PYTHON" -c '
import json, sys
for n in json.load(sys.stdin).get("nodes", []):
    if n["name"] == sys.argv[1]:
        print(n["state"])' "$1" || true
}

workers_up() {
  "$SHOALCTL" --endpoint "$ENDPOINT" --timeout-ms 500 --json status 2>/dev/null |
    "$PYTHON" -c '
import json, sys
print(sum(1 for n in json.load(sys.stdin).get("nodes", [])
          if n["role"] == "worker" and n["state"] == "up"))' || echo 0
}

# -- help and refusals ------------------------------------------------------------
bash "$SCRIPT" | grep -q "up N" || fail "no help text without arguments"
if bash "$SCRIPT" kill w1 >/dev/null 2>&1; then fail "kill without a cluster succeeded"; fi

# -- up 2 -------------------------------------------------------------------------
t0=$(now_ms)
bash "$SCRIPT" up 2 || fail "cluster.sh up 2"
echo "up 2 took $(($(now_ms) - t0)) ms"
remember_pids
[[ $(workers_up) == 2 ]] || fail "status does not show 2 workers up: $(bash "$SCRIPT" status)"
out=$(bash "$SCRIPT" status)
echo "$out"
grep -Eq '^head +head +up' <<<"$out" || fail "status table has no head up: $out"
grep -Eq '^w1 +worker +up' <<<"$out" || fail "status table has no w1 up: $out"
grep -Eq '^w2 +worker +up' <<<"$out" || fail "status table has no w2 up: $out"
# A second 'up' must refuse while this one runs.
if bash "$SCRIPT" up 1 >/dev/null 2>&1; then fail "a second up was accepted"; fi
[[ $(workers_up) == 2 ]] || fail "the refused up disturbed the cluster"

# -- an inference through the head -----------------------------------------------
out=$("$SHOALCTL" --endpoint "$ENDPOINT" --timeout-ms 10000 infer echo) ||
  fail "infer echo: $out"
echo "$out"
grep -Eq '^status +OK' <<<"$out" || fail "infer not OK: $out"
grep -Eq '^node +w[12]$' <<<"$out" || fail "infer not computed on a worker: $out"

# -- kill w1: reported down within 2 s ----------------------------------------------
bash "$SCRIPT" kill w1
t0=$(now_ms)
detected=""
while (($(now_ms) - t0 < 2000)); do
  if [[ $(state w1) == down ]]; then
    detected=$(($(now_ms) - t0))
    break
  fi
  sleep 0.05
done
[[ -n $detected ]] || fail "w1 not reported down within 2 s: $(bash "$SCRIPT" status)"
echo "w1 killed: reported down after $detected ms"
# The survivor still serves (a fresh input, so an executor must run it).
out=$("$SHOALCTL" --endpoint "$ENDPOINT" --timeout-ms 10000 infer echo --seed 7 --cache bypass) ||
  fail "infer after the kill: $out"
grep -Eq '^node +w2$' <<<"$out" || fail "infer after the kill not on w2: $out"

# -- add: w3 comes up -------------------------------------------------------------------
out=$(bash "$SCRIPT" add) || fail "cluster.sh add: $out"
echo "$out"
grep -q "w3 up" <<<"$out" || fail "add did not start w3: $out"
remember_pids
[[ $(state w3) == up ]] || fail "w3 not up: $(bash "$SCRIPT" status)"
[[ $(workers_up) == 2 ]] || fail "expected w2 and w3 up: $(bash "$SCRIPT" status)"
bash "$SCRIPT" ps

# -- freeze/thaw by name ------------------------------------------------------------------
bash "$SCRIPT" freeze w3 >/dev/null
bash "$SCRIPT" ps | grep -Eq '^w3 .* frozen$' || fail "w3 not shown frozen"
bash "$SCRIPT" thaw w3 >/dev/null

# -- down: nothing left ---------------------------------------------------------------------
t0=$(now_ms)
out=$(bash "$SCRIPT" down) || fail "cluster.sh down: $out"
echo "$out"
echo "down took $(($(now_ms) - t0)) ms"
# SIGTERM drains; a second SIGTERM must stop a node that is still
# draining, so nothing should need SIGKILL.
grep -q SIGKILL <<<"$out" && fail "down had to SIGKILL: $out"
for p in "${SEEN_PIDS[@]}"; do
  if alive "$p" && tr '\0' ' ' </proc/"$p"/cmdline | grep -qF "$CLUSTER_DIR"; then
    fail "pid $p still running after down"
  fi
done
compgen -G "$CLUSTER_DIR/nodes/*.pid" >/dev/null && fail "pid files left after down"
if bash "$SCRIPT" status >/dev/null 2>&1; then fail "status answered after down"; fi
echo "cluster.sh OK"

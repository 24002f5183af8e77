# Shared by the script tests: start a real shoald on free loopback ports and
# always stop it by pid, with bounded waits.
set -euo pipefail

: "${SHOALD:?SHOALD must point at the shoald binary}"
: "${SHOALCTL:?SHOALCTL must point at the shoalctl binary}"
PYTHON=${PYTHON:-/usr/bin/python3}

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The checks written in Python need Debian's numpy, pyzmq and msgpack;
# without them the script is skipped (77), not failed.
require_python_modules() {
  if ! "$PYTHON" -c 'import numpy, zmq, msgpack' 2>/dev/null; then
    echo "SKIP: $PYTHON lacks python3-numpy, python3-zmq or python3-msgpack"
    exit 77
  fi
}

# scratch_dir VAR NAME: makes /tmp/NAME-XXXXXX and stores its path in VAR;
# cleanup removes it when the script exits.
SCRATCH_DIRS=()
scratch_dir() {
  local dir
  dir=$(mktemp -d "/tmp/$2-XXXXXX")
  SCRATCH_DIRS+=("$dir")
  printf -v "$1" '%s' "$dir"
}

NODE_PID=""
NODE_LOG=$(mktemp /tmp/shoald-script-XXXXXX.log)
# The node's model cache (verification records, fetched files): per test.
NODE_CACHE=$(mktemp -d /tmp/shoald-cache-XXXXXX)

stop_node() {
  if [[ -n "$NODE_PID" ]] && kill -0 "$NODE_PID" 2>/dev/null; then
    kill -TERM "$NODE_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$NODE_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$NODE_PID" 2>/dev/null || true
    wait "$NODE_PID" 2>/dev/null || true
  fi
  NODE_PID=""
}

cleanup() {
  local rc=$?
  stop_node
  if [[ $rc -ne 0 && -s "$NODE_LOG" ]]; then
    echo "---- node log ----"
    cat "$NODE_LOG"
  fi
  rm -f "$NODE_LOG"
  rm -rf "$NODE_CACHE" "${SCRATCH_DIRS[@]}"
  exit $rc
}
trap cleanup EXIT

# start_node [extra shoald args...]: sets ENDPOINT and HTTP_PORT (and PORT,
# the gateway's).
start_node() {
  local port
  port=$(free_port)
  HTTP_PORT=$(free_port)
  ENDPOINT="tcp://127.0.0.1:$port"
  PORT=$port
  local models=()
  if [[ -n "${SOURCE_ROOT:-}" ]]; then
    models=(--set "models.root=$SOURCE_ROOT/examples/models")
  fi
  # GATEWAY_BIND=0.0.0.0 also takes clients from other addresses.
  "$SHOALD" --set "gateway.endpoint=tcp://${GATEWAY_BIND:-127.0.0.1}:$port" \
    --set "http.listen=127.0.0.1:$HTTP_PORT" --set node.name=script-node \
    --set "models.cache_dir=$NODE_CACHE" "${models[@]}" "$@" \
    >>"$NODE_LOG" 2>&1 &
  NODE_PID=$!
  for _ in $(seq 1 100); do
    if "$SHOALCTL" --endpoint "$ENDPOINT" --timeout-ms 200 ping >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$NODE_PID" 2>/dev/null || { echo "shoald exited early"; return 1; }
  done
  echo "shoald did not answer on $ENDPOINT"
  return 1
}

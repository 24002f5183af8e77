#!/usr/bin/env bash
# The main job, end to end: build shoal, start a standalone node (every role,
# the example models), list its models, run a hot/cold load (90% of the
# requests repeat a small hot set and are answered from the cache, 10% are
# new inputs that run on an executor, started on demand), show the result
# and the node's metrics, and stop the node with SIGTERM (drain).
#
#   scripts/quickstart.sh
#
# The node listens on tcp://127.0.0.1:5555 with metrics on
# http://127.0.0.1:9310/metrics; when either port is taken, free ones are
# picked instead. Its log goes to build/quickstart/shoald.log.
set -euo pipefail

# The model the quickstart serves: the real MLP classifier (784 -> 512 ->
# 10, OpenBLAS on the CPU) that the build generates next to the synthetic
# examples (build/examples/models, the default model repository).
MODEL="mlp"

# The load: closed loop, 16 requests in flight for 5 s; 90% reuse a hot set
# of inputs, the rest are fresh among 1000 distinct ones.
BENCH_ARGS=(--concurrency 16 --duration 5 --hot-ratio 0.9 --distinct 1000)

BUILD_DIR=build
HOST=127.0.0.1
GATEWAY_PORT=5555
HTTP_PORT=9310

cd "$(dirname "${BASH_SOURCE[0]}")/.."
say() { printf '\n==> %s\n' "$*"; }

# Beside it, where the build has the torch backend: torchvision's resnet18
# (TorchScript on libtorch, CPU), under a lighter load, since one batch of
# it costs tens of milliseconds.
TORCH_MODEL="resnet18"
TORCH_BENCH_ARGS=(--concurrency 4 --duration 5 --hot-ratio 0.9 --distinct 100)

# -- set up and build -------------------------------------------------------
scripts/setup.sh

# The cuda feature (auto) builds gpu/cuda where nvcc is found; CUDA's
# installer does not put it on PATH.
if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
if [[ ! -f $BUILD_DIR/meson-private/coredata.dat ]]; then
  say "configuring $BUILD_DIR"
  meson setup "$BUILD_DIR" --buildtype=release
fi
say "building shoald and shoalctl"
ninja -C "$BUILD_DIR" node
SHOALD=$BUILD_DIR/shoald
SHOALCTL=$BUILD_DIR/shoalctl

# -- pick ports ---------------------------------------------------------------
# A port is free when we can bind it; otherwise the kernel hands us one.
PY=/usr/bin/python3
port_free() {
  "$PY" - "$HOST" "$1" <<'PYEOF' 2>/dev/null
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
PYEOF
}
any_free_port() {
  "$PY" -c 'import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$HOST"
}
if ! port_free "$GATEWAY_PORT"; then
  p=$(any_free_port)
  echo "port $GATEWAY_PORT is busy; the gateway uses $p"
  GATEWAY_PORT=$p
fi
if ! port_free "$HTTP_PORT"; then
  p=$(any_free_port)
  while [[ $p == "$GATEWAY_PORT" ]]; do p=$(any_free_port); done
  echo "port $HTTP_PORT is busy; metrics use $p"
  HTTP_PORT=$p
fi
ENDPOINT=tcp://$HOST:$GATEWAY_PORT
METRICS_URL=http://$HOST:$HTTP_PORT/metrics
CTL=("$SHOALCTL" --endpoint "$ENDPOINT")

# -- the model repository -------------------------------------------------------
# `ninja -C build node` made build/examples/models: the shipped synthetic
# examples plus the MLP and CNN that scripts/make_models.py generates. It is
# what a plain shoald serves.
LOG_DIR=$BUILD_DIR/quickstart
mkdir -p "$LOG_DIR"
LOG=$LOG_DIR/shoald.log
MODELS=$BUILD_DIR/examples/models
if [[ ! -d $MODELS/$MODEL ]]; then
  echo "quickstart: $MODELS/$MODEL is missing (python3-numpy is needed to generate it)" >&2
  exit 1
fi

# -- start the node, stop it on any exit -----------------------------------------
NODE_PID=""

stop_node() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $NODE_PID ]] && kill -0 "$NODE_PID" 2>/dev/null; then
    say "stopping the node (pid $NODE_PID, SIGTERM: drain, then exit)"
    kill -TERM "$NODE_PID" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do # up to 10 s
      kill -0 "$NODE_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$NODE_PID" 2>/dev/null; then
      echo "the node did not stop within 10 s; killing it"
      kill -KILL "$NODE_PID" 2>/dev/null || true
    fi
    local node_rc=0
    wait "$NODE_PID" 2>/dev/null || node_rc=$?
    echo "node exited with status $node_rc; last log lines:"
    tail -n 3 "$LOG" | sed 's/^/  /'
  fi
  exit "$rc"
}
trap stop_node EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting $SHOALD on $ENDPOINT, metrics on $METRICS_URL"
"$SHOALD" \
  --set "gateway.endpoint=$ENDPOINT" \
  --set "http.listen=$HOST:$HTTP_PORT" \
  --set runtime.drain_grace_ms=5000 \
  >"$LOG" 2>&1 </dev/null &
NODE_PID=$!

# Wait until it answers (bounded: about 15 s).
ready=false
for ((i = 0; i < 60; i++)); do
  if ! kill -0 "$NODE_PID" 2>/dev/null; then
    echo "the node exited during start-up; its log ($LOG):" >&2
    sed 's/^/  /' "$LOG" >&2
    NODE_PID=""
    exit 1
  fi
  if "${CTL[@]}" --timeout-ms 200 models >/dev/null 2>&1; then
    ready=true
    break
  fi
  sleep 0.05
done
if ! $ready; then
  echo "the node did not answer on $ENDPOINT within 15 s; its log ($LOG):" >&2
  sed 's/^/  /' "$LOG" >&2
  exit 1
fi

# -- use it -----------------------------------------------------------------------
say "shoalctl --endpoint $ENDPOINT models"
"${CTL[@]}" models

say "shoalctl --endpoint $ENDPOINT bench --model $MODEL ${BENCH_ARGS[*]}"
bench_rc=0
"${CTL[@]}" bench --model "$MODEL" "${BENCH_ARGS[@]}" || bench_rc=$?

if [[ -f $MODELS/$TORCH_MODEL/1/model.pt ]]; then
  # Loaded first (plugin, module, warm-up: seconds on a small machine), so
  # that the benchmark measures serving, not the cold start.
  say "shoalctl --endpoint $ENDPOINT load $TORCH_MODEL"
  "${CTL[@]}" --timeout-ms 300000 load "$TORCH_MODEL" || bench_rc=$?
  say "shoalctl --endpoint $ENDPOINT bench --model $TORCH_MODEL ${TORCH_BENCH_ARGS[*]}"
  "${CTL[@]}" bench --model "$TORCH_MODEL" "${TORCH_BENCH_ARGS[@]}" || bench_rc=$?
else
  say "no $TORCH_MODEL example (built without the torch feature): skipped"
fi

say "metrics ($METRICS_URL)"
curl -fsS --max-time 5 "$METRICS_URL" |
  grep -E '^shoal_(requests_total|cache_hits_total|cache_misses_total|executors)' |
  head -n 20 || true

if ((bench_rc != 0)); then
  echo "quickstart: bench exited with status $bench_rc (see its errors above)" >&2
  exit "$bench_rc"
fi
say "quickstart OK; stopping the node"

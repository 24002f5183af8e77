#!/usr/bin/env bash
# How long a node takes from process start to ready, with its model cache
# already holding the model (a restarted pod on the same volume) and with a
# cold cache (a new pod): the model fetched from an HTTP repository
# (tests/integration/range_server.py, on loopback) and verified.
#
#   SHOALD=build/shoald SHOALCTL=build/shoalctl bench/ready_time.sh [MB] [RUNS]
#
# MB (default 256) is the size of the generated model's weights; RUNS
# (default 3) runs of each kind, reported as the median. Two times per run:
#   ready: process start until /readyz answers 200;
#   model: process start until the first inference of the model is answered
#          OK (the node loads models on first use: fetch, verify, load).
# With IMAGE=shoal:latest the node runs from the image instead (buildah run
# with chroot isolation, as its user, the cache mounted at the image's cache
# volume: `podman run` needs an OCI runtime that can set rlimits and
# cgroups, which some sandboxes refuse).
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
SHOALD=${SHOALD:-$SRC/build/shoald}
SHOALCTL=${SHOALCTL:-$SRC/build/shoalctl}
PYTHON=/usr/bin/python3
MB=${1:-256}
RUNS=${2:-3}
IMAGE=${IMAGE:-}

WORK=$(mktemp -d /tmp/shoal-ready-XXXXXX)
SERVER_PID=""
NODE_PID=""
CTR=""
if [[ -n $IMAGE ]]; then
  CTR=$(buildah from "$IMAGE")
fi
cleanup() {
  [[ -z $CTR ]] || buildah rm "$CTR" >/dev/null 2>&1 || true
  for pid in $NODE_PID $SERVER_PID; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# A dense model with MB of f32 weights (1024 wide), as make_models.py
# writes them.
"$PYTHON" - "$WORK/repo/big/1" "$MB" <<'EOF'
import hashlib, json, os, struct, sys
import numpy as np
out, mb = sys.argv[1], int(sys.argv[2])
os.makedirs(out)
width = 1024
layers = max(1, mb * 2**20 // (width * width * 4))
rng = np.random.default_rng(1)
tensors, offset, header = [], 0, {}
for i in range(layers):
    w = (rng.standard_normal((width, width), dtype=np.float32) * 0.03).tobytes()
    header[f"fc{i}.weight"] = {"dtype": "F32", "shape": [width, width],
                               "data_offsets": [offset, offset + len(w)]}
    offset += len(w)
    tensors.append(w)
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
blob = struct.pack("<Q", len(h)) + h + b"".join(tensors)
open(f"{out}/model.safetensors", "wb").write(blob)
sha = hashlib.sha256(blob).hexdigest()
toml = ['backend = "cpu"', "", "[[inputs]]", 'name = "x"', 'dtype = "f32"',
        f"shape = [-1, {width}]", "", "[[outputs]]", 'name = "y"', 'dtype = "f32"',
        f"shape = [-1, {width}]", "", "[batching]", "max_batch = 8", "max_delay_us = 100",
        "", "[resources]", 'device = "cpu"', f"memory_bytes = {len(blob)}", "",
        "[weights]", 'file = "model.safetensors"', "", "[files]",
        f'"model.safetensors" = "{sha}"']
for i in range(layers):
    toml += ["", "[[layers]]", 'op = "dense"', f'weight = "fc{i}.weight"']
open(f"{out}/model.toml", "w").write("\n".join(toml) + "\n")
print(f"model big: {layers} layers, {len(blob) / 2**20:.0f} MiB")
EOF
"$SHOALCTL" index "$WORK/repo" >/dev/null

"$PYTHON" "$SRC/tests/integration/range_server.py" --dir "$WORK/repo" --port 0 \
  >"$WORK/port" 2>"$WORK/server.err" &
SERVER_PID=$!
for _ in $(seq 1 50); do
  [[ -s $WORK/port ]] && break
  sleep 0.1
done
REPO_URL="http://127.0.0.1:$(head -1 "$WORK/port")"

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }

# run_once CACHE_DIR: prints "READY_S MODEL_S".
run_once() {
  local cache=$1 gw http t0 t_ready="" t_model=""
  gw=$(free_port)
  http=$(free_port)
  t0=$(now)
  if [[ -n $IMAGE ]]; then
    # The image's files, user and default config; the host's network. The
    # clock starts when shoald starts inside, not when buildah does (it
    # takes seconds to set up the container).
    rm -f "$WORK/t0/t0"
    mkdir -p "$WORK/t0" && chmod 777 "$WORK/t0"
    buildah run --isolation chroot --user 10001:10001 \
      -v "$cache:/var/cache/shoal/models" -v "$WORK/t0:/run/t0" "$CTR" -- \
      /bin/sh -c 'date +%s.%N >/run/t0/t0; exec /usr/local/bin/shoald "$@"' shoald \
      --config=/etc/shoal/shoal.toml --set "gateway.endpoint=tcp://127.0.0.1:$gw" \
      --set "http.listen=127.0.0.1:$http" --set "models.root=$REPO_URL" \
      >"$WORK/node.log" 2>&1 &
  else
    "$SHOALD" --set "gateway.endpoint=tcp://127.0.0.1:$gw" \
      --set "http.listen=127.0.0.1:$http" --set "models.root=$REPO_URL" \
      --set "models.cache_dir=$cache" >"$WORK/node.log" 2>&1 &
  fi
  NODE_PID=$!
  for _ in $(seq 1 1200); do
    if curl -sf -o /dev/null "http://127.0.0.1:$http/readyz"; then
      t_ready=$(now)
      break
    fi
    sleep 0.05
  done
  [[ -n $t_ready ]] || { cat "$WORK/node.log"; echo "node never ready" >&2; exit 1; }
  if [[ -n $IMAGE ]]; then
    t0=$(cat "$WORK/t0/t0")
  fi
  "$PYTHON" - "tcp://127.0.0.1:$gw" <<'EOF' || { cat "$WORK/node.log"; exit 1; }
import sys, msgpack, numpy as np, zmq
s = zmq.Context.instance().socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect(sys.argv[1])
x = np.zeros((1, 1024), dtype="<f4")
s.send(msgpack.packb({"v": 1, "id": 1, "model": "big", "cache": "bypass",
    "inputs": [{"name": "x", "dtype": "f32", "shape": [1, 1024], "data": x.tobytes()}]},
    use_bin_type=True))
if not s.poll(300000):
    sys.exit("no reply in 300 s")
rep = msgpack.unpackb(s.recv(), raw=False)
if rep["status"] != "OK":
    sys.exit(f"inference: {rep['status']} {rep.get('error')}")
EOF
  t_model=$(now)
  kill -TERM "$NODE_PID"
  wait "$NODE_PID" 2>/dev/null || true
  NODE_PID=""
  awk -v a="$t0" -v r="$t_ready" -v m="$t_model" 'BEGIN {printf "%.3f %.3f\n", r - a, m - a}'
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "node: ${IMAGE:-$SHOALD (plain process)}; repository $REPO_URL"
: >"$WORK/cold" && : >"$WORK/warm"
for i in $(seq 1 "$RUNS"); do
  cache=$WORK/cache-$i
  mkdir -p "$cache"
  chmod 777 "$cache" # the container's non-root user writes here
  run_once "$cache" >>"$WORK/cold"
  run_once "$cache" >>"$WORK/warm"
done
for kind in cold warm; do
  printf '%s cache: ready %.2f s, model answered %.2f s (median of %d; runs: %s)\n' "$kind" \
    "$(cut -d' ' -f1 "$WORK/$kind" | median)" "$(cut -d' ' -f2 "$WORK/$kind" | median)" \
    "$RUNS" "$(tr '\n' ';' <"$WORK/$kind")"
done

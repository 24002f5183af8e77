# A model repository served over HTTP (tests/integration/range_server.py,
# with Range support) to a live node:
#  - a cold request loads the MLP through the model store (parallel ranged
#    downloads; the server drops the first connection of every file mid-way,
#    so the download must resume) and answers what numpy computed;
#  - a weights file whose sha256 does not match its manifest is refused:
#    the request gets UNAVAILABLE naming the file, and nothing of it is left
#    in the cache;
#  - after a restart the second load fetches nothing (server log, metrics);
#  - with the server gone, a restarted node serves from its cached copy.
source "$(dirname "$0")/lib.sh"

require_python_modules

SRC=${SOURCE_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
scratch_dir WORK shoal-http-repo
REPO=$WORK/repo
SERVER_LOG=$WORK/server.log
SERVER_PID=""

stop_server() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}

http_repo_cleanup() {
  local rc=$?
  stop_server
  if [[ $rc -ne 0 && -s "$SERVER_LOG" ]]; then
    echo "---- server log ----"
    cat "$SERVER_LOG"
  fi
  if [[ $rc -eq 0 ]]; then cleanup; else (exit "$rc") || cleanup; fi
}
trap http_repo_cleanup EXIT

fail() {
  echo "FAIL: $*"
  exit 1
}

"$PYTHON" "$SRC/scripts/make_models.py" --out "$REPO" >/dev/null
# `broken`: the MLP's manifest over weights with one byte changed.
mkdir -p "$REPO/broken/1"
cp "$REPO/mlp/1/model.toml" "$REPO/broken/1/model.toml"
"$PYTHON" - "$REPO/mlp/1/model.safetensors" "$REPO/broken/1/model.safetensors" <<'EOF'
import sys
data = bytearray(open(sys.argv[1], "rb").read())
data[-100] ^= 0x55
open(sys.argv[2], "wb").write(data)
EOF
"$SHOALCTL" index "$REPO" >/dev/null
grep -q '"broken" = \[1\]' "$REPO/index.toml" || fail "index.toml lacks broken"
grep -q '"mlp" = \[1\]' "$REPO/index.toml" || fail "index.toml lacks mlp"

# --drop-after: the first GET of every file is cut off after 300 kB.
"$PYTHON" "$SRC/tests/integration/range_server.py" --dir "$REPO" --port 0 \
  --log "$SERVER_LOG" --drop-after 300000 >"$WORK/port" 2>"$WORK/server.err" &
SERVER_PID=$!
for _ in $(seq 1 50); do
  [[ -s "$WORK/port" ]] && break
  sleep 0.1
done
HTTP_REPO="http://127.0.0.1:$(head -1 "$WORK/port")"

STORE=(--set "models.root=$HTTP_REPO" --set models.parallel_ranges=4
       --set models.range_threshold_bytes=262144)
start_node "${STORE[@]}"

weights_gets() {
  grep -c "^GET /$1/1/model.safetensors " "$SERVER_LOG" || true
}

# Infers the MLP with its reference inputs (batch 7) and checks the result
# against numpy's; `expect` is OK or the status a request must get.
infer_check() {
  "$PYTHON" - "$ENDPOINT" "$REPO" "$1" "$2" <<'EOF'
import json, struct, sys, time
import msgpack, numpy as np, zmq

endpoint, root, model, expect = sys.argv[1:5]

def read_safetensors(path):
    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    data = blob[8 + n:]
    return {k: np.frombuffer(data[e["data_offsets"][0]:e["data_offsets"][1]],
                             dtype="<f4").reshape(e["shape"])
            for k, e in header.items()}

ref = read_safetensors(f"{root}/mlp/1/reference.safetensors")
x, want = ref["input.b7"], ref["output.b7"]
sock = zmq.Context.instance().socket(zmq.DEALER)
sock.setsockopt(zmq.LINGER, 0)
sock.connect(endpoint)
sock.send(msgpack.packb({"v": 1, "id": 1, "model": model, "cache": "bypass",
    "inputs": [{"name": "x", "dtype": "f32", "shape": list(x.shape),
                "data": x.astype("<f4").tobytes()}]}, use_bin_type=True))
if not sock.poll(60000):
    sys.exit(f"FAIL: {model}: no reply within 60 s")
rep = msgpack.unpackb(sock.recv(), raw=False)
if rep["status"] != expect:
    sys.exit(f"FAIL: {model}: status {rep['status']} ({rep.get('error')}), "
             f"expected {expect}")
if expect != "OK":
    print(rep.get("error", ""))
    sys.exit(0)
out = rep["outputs"][0]
got = np.frombuffer(out["data"], dtype="<f4").reshape(out["shape"])
if not np.allclose(got, want, rtol=1e-4, atol=1e-6):
    sys.exit(f"FAIL: {model}: max abs diff {np.abs(got - want).max()}")
print(f"{model}: batch {len(x)} matches numpy")
EOF
}

# 1. Cold start over HTTP: lazy spawn, ranged download with a resume.
infer_check mlp OK
[[ -f "$NODE_CACHE/mlp/1/model.safetensors" ]] || fail "mlp weights not in the cache"
[[ ! -e "$NODE_CACHE/mlp/1/model.safetensors.part" ]] || fail ".part left behind"
cmp -s "$NODE_CACHE/mlp/1/model.safetensors" "$REPO/mlp/1/model.safetensors" ||
  fail "cached weights differ from the repository's"
grep -q "^GET /mlp/1/model.safetensors bytes=" "$SERVER_LOG" ||
  fail "the weights were not fetched in ranges"
[[ $(weights_gets mlp) -gt 4 ]] ||
  fail "expected the dropped range to be fetched again (GETs: $(weights_gets mlp))"
grep -q "resuming\|resumed\|retry" "$NODE_LOG" ||
  fail "the node log does not mention the resumed download"
echo "cold start over HTTP: OK ($(weights_gets mlp) ranged GETs, one dropped)"

# 2. A corrupt file is refused with a reason naming it; nothing is left.
reason=$(infer_check broken UNAVAILABLE)
[[ "$reason" == *"model.safetensors"* && "$reason" == *"sha256 mismatch"* ]] ||
  fail "the reason should name the file and the mismatch: '$reason'"
leftovers=$(find "$NODE_CACHE/broken" -name 'model.safetensors*' 2>/dev/null | wc -l)
[[ $leftovers -eq 0 ]] || fail "corrupt download left in the cache: $(find "$NODE_CACHE/broken")"
echo "corrupt weights refused: $reason"

# shoalctl load on a pipe: no progress bar, a plain result line.
"$SHOALCTL" --endpoint "$ENDPOINT" load cnn >"$WORK/load.out" 2>&1 ||
  fail "shoalctl load cnn: $(cat "$WORK/load.out")"
grep -q "^load cnn version 1: OK" "$WORK/load.out" || fail "load output: $(cat "$WORK/load.out")"
if grep -q $'\r' "$WORK/load.out"; then fail "progress bar drawn on a pipe"; fi

# 3. Restart: the second load fetches nothing.
stop_node
: >"$SERVER_LOG"
start_node "${STORE[@]}"
infer_check mlp OK
[[ $(weights_gets mlp) -eq 0 ]] || fail "the second load fetched the weights again"
grep -q "^GET /index.toml " "$SERVER_LOG" || fail "the restarted node did not read the index"
metrics=$(curl -sf "http://127.0.0.1:$HTTP_PORT/metrics")
grep -q '^shoal_model_store_files_total{result="reused"} [1-9]' <<<"$metrics" ||
  fail "no reused file in the metrics"
grep -q '^shoal_model_store_downloaded_bytes_total 0$' <<<"$metrics" ||
  fail "bytes were downloaded on the second load: $(grep downloaded <<<"$metrics")"
echo "second load: nothing fetched"

# 4. Repository down: the node starts from its cached index and manifests.
stop_node
stop_server
start_node "${STORE[@]}"
infer_check mlp OK
grep -q "unreachable" "$NODE_LOG" || fail "no warning about the unreachable repository"
echo "repository down: served from the cache"

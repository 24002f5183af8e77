# Devices end to end on a standalone node: the MLP copied as `mlp_gpu`
# (resources.device = "gpu") and `mlp_any` (device = "any"). Without a GPU,
# mlp_gpu is refused with UNAVAILABLE naming the reason and the node keeps
# serving; mlp_any runs on the CPU and matches numpy. With a GPU (status
# lists devices), both run there and the device shows their replicas.
source "$(dirname "$0")/lib.sh"

require_python_modules

SRC=${SOURCE_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
scratch_dir MODELS_DIR shoal-device-models

"$PYTHON" "$SRC/scripts/make_models.py" --out "$MODELS_DIR" >/dev/null
for variant in gpu any; do
  mkdir -p "$MODELS_DIR/mlp_$variant"
  cp -r "$MODELS_DIR/mlp/1" "$MODELS_DIR/mlp_$variant/1"
  # model.toml is not among its own [files]: editing it keeps them valid.
  sed -i "s/^device = \"cpu\"/device = \"$variant\"/" \
    "$MODELS_DIR/mlp_$variant/1/model.toml"
  grep -q "^device = \"$variant\"" "$MODELS_DIR/mlp_$variant/1/model.toml"
done

start_node --set "models.root=$MODELS_DIR"

"$PYTHON" - "$ENDPOINT" "$MODELS_DIR" <<'PY'
import json
import struct
import sys
import time

import msgpack
import numpy as np
import zmq

endpoint, root = sys.argv[1], sys.argv[2]
sock = zmq.Context.instance().socket(zmq.DEALER)
sock.setsockopt(zmq.LINGER, 0)
sock.connect(endpoint)
next_id = [1]


def call(**fields):
    rid = next_id[0]
    next_id[0] += 1
    sock.send(msgpack.packb({"v": 1, "id": rid, **fields}, use_bin_type=True))
    deadline = time.monotonic() + 60
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(int(left * 1000) + 1):
            raise SystemExit(f"FAIL: no reply to {fields}")
        rep = msgpack.unpackb(sock.recv(), raw=False)
        if rep.get("id") == rid:
            return rep


def reference(n):
    with open(f"{root}/mlp/1/reference.safetensors", "rb") as f:
        blob = f.read()
    (hn,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + hn])
    data = blob[8 + hn:]
    out = {}
    for key in (f"input.b{n}", f"output.b{n}"):
        e = header[key]
        s, t = e["data_offsets"]
        out[key] = np.frombuffer(data[s:t], dtype="<f4").reshape(e["shape"])
    return out[f"input.b{n}"], out[f"output.b{n}"]


def infer(model, x):
    return call(op="infer", model=model, cache="bypass", timeout_ms=60000,
                inputs=[{"name": "x", "dtype": "f32", "shape": list(x.shape),
                         "data": x.tobytes()}])


def matches(rep, want, rtol):
    if rep.get("status") != "OK":
        return False
    got = np.frombuffer(rep["outputs"][0]["data"], dtype="<f4").reshape(want.shape)
    return np.allclose(got, want, rtol=rtol, atol=1e-6)


status = call(op="status")
nodes = status.get("nodes") or []
if status.get("status") != "OK" or len(nodes) != 1 or "devices" not in nodes[0]:
    raise SystemExit(f"FAIL: status has no devices for the node: {status}")
gpus = nodes[0]["devices"]
print(f"devices: {gpus}")
x, want = reference(7)

rep = infer("mlp_gpu", x)
if not gpus:
    if rep.get("status") != "UNAVAILABLE":
        raise SystemExit(f"FAIL: mlp_gpu on a node without a GPU: {rep.get('status')} "
                         f"{rep.get('error')}, expected UNAVAILABLE")
    why = rep.get("error", "")
    for part in ('resources.device = "gpu"', "this node has no GPU", "mlp_gpu/1/model.toml"):
        if part not in why:
            raise SystemExit(f"FAIL: mlp_gpu's error does not say {part!r}: {why}")
    print(f"ok   mlp_gpu refused: {why}")
elif not matches(rep, want, 1e-4):
    raise SystemExit(f"FAIL: mlp_gpu on a GPU: {rep.get('status')} {rep.get('error')}")

rep = infer("mlp_any", x)
if not matches(rep, want, 1e-4):
    raise SystemExit(f"FAIL: mlp_any: {rep.get('status')} {rep.get('error')}")
print(f"ok   mlp_any served by {rep.get('node')} and matches numpy")

# The refusal did not hurt the node: the plain MLP still serves.
rep = infer("mlp", x)
if not matches(rep, want, 1e-4):
    raise SystemExit(f"FAIL: mlp after the refusal: {rep.get('status')} {rep.get('error')}")

if gpus:
    after = call(op="status")["nodes"][0]["devices"]
    on_gpu = sum(d.get("replicas", {}).get("mlp_any", 0) for d in after)
    if on_gpu != 1:
        raise SystemExit(f"FAIL: mlp_any should run on a GPU: {after}")
print("device fallback: OK")
PY

# /readyz says what the node has.
body=$(curl -s "http://127.0.0.1:$HTTP_PORT/readyz" || true)
echo "readyz: $body"
if ! grep -qi "gpu" <<<"$body"; then
  echo "FAIL: /readyz does not mention GPUs"
  exit 1
fi
echo "device fallback OK"

# TorchScript models end to end: the examples scripts/make_models.py --torch
# writes at build time (resnet18, and the text classifier whose forward
# returns a dict), served by a live node over ZeroMQ. Their answers must
# match the outputs PyTorch computed within 1e-4 relative, for whole
# batches (resnet18: 1, 3, 8; text: 1, 7, 32) and for the same rows sent
# as concurrent one-row requests that the dynamic batcher puts together.
# The first request for each is cold (lazy spawn, plugin and module load,
# warm-up). Before any torch model loads, the node has not mapped the
# plugin or libtorch and its RSS holds no libtorch; after, it has.
source "$(dirname "$0")/lib.sh"

require_python_modules
if [[ -z ${TORCH_PLUGIN:-} ]]; then
  echo "SKIP: built without the torch feature (no libtorch-dev)"
  exit 77
fi
for m in resnet18 text; do
  if [[ ! -f ${EXAMPLE_MODELS:-}/$m/1/model.pt ]]; then
    echo "SKIP: no $m example in '${EXAMPLE_MODELS:-}' (python3-torch missing?)"
    exit 77
  fi
done

# shoald itself never links libtorch: only the plugin does.
if ldd "$SHOALD" | grep -q 'libtorch'; then
  echo "FAIL: $SHOALD links libtorch:"
  ldd "$SHOALD" | grep libtorch
  exit 1
fi

start_node --set "models.root=$EXAMPLE_MODELS" --set torch.threads=2

mapped() { grep -cE 'libshoal_torch|libtorch' "/proc/$NODE_PID/maps" || true; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$NODE_PID/status"; }

# A node that has served only a graph model (the MLP, OpenBLAS).
"$SHOALCTL" --endpoint "$ENDPOINT" --timeout-ms 30000 infer mlp \
  --input x:f32:1,784:0.5 >/dev/null
if [[ $(mapped) != 0 ]]; then
  echo "FAIL: a node that loaded no torch model has mapped the plugin:"
  grep -E 'libshoal_torch|libtorch' "/proc/$NODE_PID/maps" | head -3
  exit 1
fi
rss_before=$(rss_kb)
echo "before any torch model: plugin and libtorch not mapped, RSS ${rss_before} kB"
# AddressSanitizer's shadow memory inflates every RSS: the bound is for
# real builds (-Db_sanitize=address,undefined checks the rest).
if grep -q 'libasan' "/proc/$NODE_PID/maps"; then
  echo "sanitizer build: the RSS bound is not checked"
elif ((rss_before > 120 * 1024)); then
  echo "FAIL: idle RSS ${rss_before} kB: more than a node without libtorch needs"
  exit 1
fi

"$PYTHON" - "$ENDPOINT" "$EXAMPLE_MODELS" <<'EOF'
import json
import struct
import sys
import time

import msgpack
import numpy as np
import zmq

endpoint, root = sys.argv[1], sys.argv[2]
MODELS = {
    "resnet18": {"inputs": [("image", "f32")], "outputs": ["logits"],
                 "batches": (1, 3, 8), "rows": 3},
    "text": {"inputs": [("tokens", "i64")], "outputs": ["logits", "embedding"],
             "batches": (1, 7, 32), "rows": 7},
}
NP = {"F32": "<f4", "I64": "<i8"}
WIRE = {"f32": "<f4", "i64": "<i8"}
failures = []

sock = zmq.Context.instance().socket(zmq.DEALER)
sock.setsockopt(zmq.LINGER, 0)
sock.connect(endpoint)
next_id = [1]


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    data = blob[8 + n:]
    out = {}
    for name, e in header.items():
        s, t = e["data_offsets"]
        out[name] = np.frombuffer(data[s:t], dtype=NP[e["dtype"]]).reshape(e["shape"])
    return out


def send(model, spec, xs, cache="use"):
    rid = next_id[0]
    next_id[0] += 1
    inputs = [{"name": name, "dtype": dt, "shape": list(x.shape),
               "data": np.ascontiguousarray(x, dtype=WIRE[dt]).tobytes()}
              for (name, dt), x in zip(spec["inputs"], xs)]
    sock.send(msgpack.packb({"v": 1, "id": rid, "op": "infer", "model": model,
                             "cache": cache, "timeout_ms": 120000,
                             "inputs": inputs}, use_bin_type=True))
    return rid


def receive(ids, timeout_s=180.0):
    """Replies to every id in ids, by id."""
    got = {}
    deadline = time.monotonic() + timeout_s
    while len(got) < len(ids):
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(int(left * 1000) + 1):
            raise SystemExit(f"FAIL: {len(ids) - len(got)} request(s) unanswered")
        rep = msgpack.unpackb(sock.recv(), raw=False)
        if rep.get("id") in ids:
            got[rep["id"]] = rep
    return got


def check(case, rep, spec, want):
    if rep.get("status") != "OK":
        failures.append(f"{case}: status {rep.get('status')}: {rep.get('error')}")
        print(f"FAIL {case}: {rep.get('status')}: {rep.get('error')}")
        return
    outs = {o.get("name"): o for o in rep.get("outputs") or []}
    worst = 0.0
    for name, w in zip(spec["outputs"], want):
        o = outs.get(name)
        if o is None or o.get("dtype") != "f32" or list(o.get("shape", [])) != list(w.shape):
            failures.append(f"{case}: output {name}: {o and (o.get('dtype'), o.get('shape'))}, "
                            f"expected f32 {list(w.shape)}")
            return
        g = np.frombuffer(o["data"], dtype="<f4").reshape(w.shape).astype(np.float64)
        w = w.astype(np.float64)
        # Relative to the tensor's scale: a logit near zero has no meaningful
        # relative error of its own.
        rel = np.abs(g - w).max() / max(np.abs(w).max(), 1e-30)
        worst = max(worst, rel)
        if not (rel <= 1e-4 and np.all(np.isfinite(g))):
            failures.append(f"{case}: {name}: max error {rel:.2e} of the largest "
                            f"value exceeds 1e-4")
    print(f"ok   {case}: source {rep.get('source')}, max rel err {worst:.2e}, "
          f"timing_us {rep.get('timing_us')}")


for model, spec in MODELS.items():
    ref = read_safetensors(f"{root}/{model}/1/reference.safetensors")

    def refs(n, names):
        return [ref[f"{name}.b{n}"] for name in names]

    for i, n in enumerate(spec["batches"]):
        xs = refs(n, [name for name, _ in spec["inputs"]])
        want = refs(n, spec["outputs"])
        t0 = time.monotonic()
        rid = send(model, spec, xs)
        rep = receive({rid})[rid]
        case = f"{model} b{n}" + (" (cold start)" if i == 0 else "")
        check(case, rep, spec, want)
        if i == 0:
            print(f"{model}: cold request to reply {1000 * (time.monotonic() - t0):.0f} ms")
            if rep.get("status") != "OK":
                break

    # One whole batch's rows as concurrent one-row requests (cache
    # bypassed): batched together, each must still get its own row.
    n = spec["rows"]
    xs = refs(n, [name for name, _ in spec["inputs"]])
    want = refs(n, spec["outputs"])
    ids = {send(model, spec, [x[r:r + 1] for x in xs], cache="bypass"): r
           for r in range(n)}
    for rid, rep in receive(set(ids)).items():
        r = ids[rid]
        check(f"{model} row {r} of b{n} alone", rep, spec, [w[r:r + 1] for w in want])

if failures:
    print("torch models: FAILED")
    for f in failures:
        print("  " + f)
    sys.exit(1)
print("torch models: every output matches PyTorch within 1e-4")
EOF

if [[ $(mapped) == 0 ]]; then
  echo "FAIL: torch models served but the plugin is not in the node's maps"
  exit 1
fi
echo "after the torch models: plugin mapped, RSS $(rss_kb) kB (before: ${rss_before} kB)"
echo "torch models OK"

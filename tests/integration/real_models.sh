# Real models end to end: scripts/make_models.py writes the MLP and the CNN
# with numpy reference outputs; a live node runs them on the cpu backend and
# its answers over ZeroMQ must match numpy within 1e-4 relative, for batch
# sizes 1, 7 and 32. The first request for each model is a cold start (lazy
# spawn + load); a repeated request is answered from the cache.
source "$(dirname "$0")/lib.sh"

require_python_modules

SRC=${SOURCE_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
scratch_dir MODELS_DIR shoal-real-models

"$PYTHON" "$SRC/scripts/make_models.py" --out "$MODELS_DIR"

start_node --set "models.root=$MODELS_DIR"

"$PYTHON" - "$ENDPOINT" "$MODELS_DIR" <<'EOF'
import json
import struct
import sys
import time

import msgpack
import numpy as np
import zmq

endpoint, root = sys.argv[1], sys.argv[2]
MODELS = {"mlp": "x", "cnn": "image"}
BATCHES = (1, 7, 32)
RTOL, ATOL = 1e-4, 1e-6
failures = []


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    data = blob[8 + n:]
    out = {}
    for name, e in header.items():
        assert e["dtype"] == "F32", (path, name, e["dtype"])
        s, t = e["data_offsets"]
        out[name] = np.frombuffer(data[s:t], dtype="<f4").reshape(e["shape"])
    return out


sock = zmq.Context.instance().socket(zmq.DEALER)
sock.setsockopt(zmq.LINGER, 0)
sock.connect(endpoint)
next_id = [1]


def call(timeout_s=60.0, **fields):
    rid = next_id[0]
    next_id[0] += 1
    req = {"v": 1, "id": rid}
    req.update(fields)
    sock.send(msgpack.packb(req, use_bin_type=True))
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(int(left * 1000) + 1):
            raise SystemExit(f"FAIL: no reply to {fields.get('op', 'infer')} "
                             f"{fields.get('model', '')} within {timeout_s} s")
        rep = msgpack.unpackb(sock.recv(), raw=False)
        if rep.get("id") == rid:
            return rep


def infer(model, input_name, x, cache="use"):
    return call(op="infer", model=model, cache=cache, timeout_ms=60000,
                inputs=[{"name": input_name, "dtype": "f32", "shape": list(x.shape),
                         "data": np.ascontiguousarray(x, dtype="<f4").tobytes()}])


def check(case, rep, want):
    """Checks one infer reply against the numpy reference; returns the output."""
    if rep.get("status") != "OK":
        failures.append(f"{case}: status {rep.get('status')}: {rep.get('error')}")
        print(f"FAIL {case}: {rep.get('status')}: {rep.get('error')}")
        return None
    outs = rep.get("outputs") or []
    if len(outs) != 1 or outs[0].get("name") != "probs":
        failures.append(f"{case}: expected one output 'probs', got "
                        f"{[o.get('name') for o in outs]}")
        return None
    out = outs[0]
    if out.get("dtype") != "f32" or list(out.get("shape", [])) != list(want.shape):
        failures.append(f"{case}: output {out.get('dtype')} {out.get('shape')}, "
                        f"expected f32 {list(want.shape)}")
        return None
    got = np.frombuffer(out["data"], dtype="<f4").reshape(want.shape)
    g, w = got.astype(np.float64), want.astype(np.float64)
    abs_err = np.abs(g - w)
    rel_err = abs_err / np.maximum(np.abs(w), 1e-30)
    ok = np.allclose(g, w, rtol=RTOL, atol=ATOL) and np.all(np.isfinite(g))
    print(f"{'ok  ' if ok else 'FAIL'} {case}: source {rep.get('source')}, "
          f"max abs err {abs_err.max():.3e}, max rel err {rel_err.max():.3e}, "
          f"timing_us {rep.get('timing_us')}")
    if not ok:
        failures.append(f"{case}: max rel err {rel_err.max():.3e} exceeds {RTOL}")
    return got


listing = call(op="models", timeout_s=10)
if listing.get("status") != "OK":
    raise SystemExit(f"FAIL: models: {listing.get('status')}: {listing.get('error')}")
state = {m["name"]: m for m in listing.get("models", [])}
for model in MODELS:
    if model not in state:
        raise SystemExit(f"FAIL: the node does not list model {model!r} "
                         f"(it lists {sorted(state)})")
    print(f"{model}: listed, state {state[model].get('state')}, "
          f"versions {state[model].get('versions')}")

for model, input_name in MODELS.items():
    ref = read_safetensors(f"{root}/{model}/1/reference.safetensors")
    if state[model].get("state") != "available":
        failures.append(f"{model}: expected state 'available' before the first "
                        f"request (cold start), got {state[model].get('state')!r}")
    for i, n in enumerate(BATCHES):
        x, want = ref[f"input.b{n}"], ref[f"output.b{n}"]
        case = f"{model} b{n}"
        if i == 0:
            case += " (cold start)"
            t0 = time.monotonic()
        rep = infer(model, input_name, x)
        got = check(case, rep, want)
        if i == 0:
            if rep.get("status") != "OK":
                break  # the model does not load: its other cases say nothing new
            print(f"{model}: cold start to first answer {1000 * (time.monotonic() - t0):.1f} ms")
        if got is None:
            continue
        if rep.get("source") not in ("executor", "coalesced"):
            failures.append(f"{case}: first request answered from {rep.get('source')!r}, "
                            f"expected executor")
        if rep.get("version") != 1:
            failures.append(f"{case}: served by version {rep.get('version')}, expected 1")
        # The identical request again: from the result cache, same bytes.
        rep2 = infer(model, input_name, x)
        got2 = check(f"{model} b{n} repeat", rep2, want)
        if got2 is not None:
            if rep2.get("source") != "cache":
                failures.append(f"{model} b{n} repeat: source {rep2.get('source')!r}, "
                                f"expected 'cache'")
            if not np.array_equal(got, got2):
                failures.append(f"{model} b{n} repeat: cached output differs")

    if any(f.startswith(f"{model} b1 (cold start): status") for f in failures):
        continue
    # The 7 rows of b7 as 7 concurrent one-row requests (cache bypassed): the
    # dynamic batcher may put them in one batch; each row must still match.
    x, want = ref["input.b7"], ref["output.b7"]
    ids = {}
    for r in range(7):
        rid = next_id[0]
        next_id[0] += 1
        ids[rid] = r
        row = np.ascontiguousarray(x[r:r + 1], dtype="<f4")
        sock.send(msgpack.packb({"v": 1, "id": rid, "op": "infer", "model": model,
                                 "cache": "bypass", "timeout_ms": 60000,
                                 "inputs": [{"name": input_name, "dtype": "f32",
                                             "shape": list(row.shape),
                                             "data": row.tobytes()}]},
                                use_bin_type=True))
    deadline = time.monotonic() + 60
    while ids:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(int(left * 1000) + 1):
            raise SystemExit(f"FAIL: {model}: {len(ids)} one-row requests unanswered")
        rep = msgpack.unpackb(sock.recv(), raw=False)
        r = ids.pop(rep.get("id"), None)
        if r is None:
            continue
        check(f"{model} row {r} of b7 alone", rep, want[r:r + 1])

if failures:
    print("real models: FAILED")
    for f in failures:
        print("  " + f)
    sys.exit(1)
print("real models: all outputs match numpy within rtol 1e-4")
EOF
echo "real models OK"

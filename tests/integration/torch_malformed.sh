# Broken torch models get a clear refusal and the node keeps serving: each
# of these is answered UNAVAILABLE with an error that names its model.pt
# and the reason, and afterwards a good torch model and a graph model
# still answer OK.
#   notscript  model.pt is not TorchScript (a text file)
#   truncated  model.pt cut in half (its sha256 is of the cut file)
#   badsha     model.pt does not match its [files] sha256
#   arity      forward takes two inputs, the manifest declares one
#   badshape   forward returns [n, 5], the manifest declares [-1, 4]
#   baddtype   forward returns f64, the manifest declares f32
#   nodict     forward returns a dict without the declared 'embedding'
#   newer      saved by a torch newer than the node's libtorch (the
#              archive's format version raised to 99)
# Models that load but whose forward fails on some input are answered
# INTERNAL with the exception's own words, not the interpreter's
# boilerplate first line, and answer OK on the next good input:
#   raises     forward raises RuntimeError("boom") for a large input
#   embed      an embedding indexed out of range
source "$(dirname "$0")/lib.sh"

require_python_modules
if [[ -z ${TORCH_PLUGIN:-} ]]; then
  echo "SKIP: built without the torch feature (no libtorch-dev)"
  exit 77
fi
if ! "$PYTHON" -c 'import torch' 2>/dev/null; then
  echo "SKIP: $PYTHON has no torch (python3-torch)"
  exit 77
fi

SRC=${SOURCE_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
scratch_dir MODELS_DIR shoal-torch-malformed
"$PYTHON" "$SRC/scripts/make_models.py" --out "$MODELS_DIR" >/dev/null

# TorchScript compiles from source: the generator must be a file.
scratch_dir GEN_DIR shoal-torch-gen
cat >"$GEN_DIR/make_bad_models.py" <<'EOF'
import hashlib
import io
import os
import sys
import zipfile
from typing import Dict

import torch

root = sys.argv[1]


class Good(torch.nn.Module):
    def forward(self, x):
        return {"logits": x[:, :4] * 2.0, "embedding": x + 1.0}


class Arity(torch.nn.Module):
    def forward(self, x, y):
        return x + y


class BadShape(torch.nn.Module):
    def forward(self, x):
        return x[:, :5]


class BadDtype(torch.nn.Module):
    def forward(self, x):
        return x[:, :4].double()


class Raises(torch.nn.Module):
    def forward(self, x):
        if bool(x.sum() > 1000.0):
            raise RuntimeError("boom: the input sum is too large")
        return x[:, :4] * 2.0


class Embed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.table = torch.nn.Embedding(10, 4)

    def forward(self, t):
        return self.table(t).sum(1)


class NoDict(torch.nn.Module):
    def forward(self, x) -> Dict[str, torch.Tensor]:
        return {"logits": x[:, :4]}


def saved(module):
    path = os.path.join(root, "tmp.pt")
    torch.jit.save(torch.jit.script(module.eval()), path)
    with open(path, "rb") as f:
        blob = f.read()
    os.remove(path)
    return blob


def write(name, blob, outputs, sha=None, input_=("x", "f32", "[-1, 8]")):
    d = os.path.join(root, name, "1")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.pt"), "wb") as f:
        f.write(blob)
    sha = sha or hashlib.sha256(blob).hexdigest()
    toml = ['backend = "torch"', "",
            "[[inputs]]", f'name = "{input_[0]}"', f'dtype = "{input_[1]}"',
            f"shape = {input_[2]}"]
    for out, shape in outputs:
        toml += ["", "[[outputs]]", f'name = "{out}"', 'dtype = "f32"', f"shape = {shape}"]
    toml += ["", "[batching]", "max_batch = 4", "max_delay_us = 1000",
             "", "[weights]", 'file = "model.pt"',
             "", "[files]", f'"model.pt" = "{sha}"']
    with open(os.path.join(d, "model.toml"), "w") as f:
        f.write("\n".join(toml) + "\n")


def newer(blob):
    """The archive with its format version raised past any libtorch's."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(blob)) as zin, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/version"):
                data = b"99\n"
            zout.writestr(info, data)
    return out.getvalue()


dict_outputs = [("logits", "[-1, 4]"), ("embedding", "[-1, 8]")]
good = saved(Good())
write("good", good, dict_outputs)
write("notscript", b"this is not a TorchScript archive\n" * 8, [("logits", "[-1, 4]")])
write("truncated", good[: len(good) // 2], dict_outputs)
write("badsha", good, dict_outputs, sha="0" * 64)
write("arity", saved(Arity()), [("logits", "[-1, 8]")])
write("badshape", saved(BadShape()), [("logits", "[-1, 4]")])
write("baddtype", saved(BadDtype()), [("logits", "[-1, 4]")])
write("nodict", saved(NoDict()), dict_outputs)
write("newer", newer(good), dict_outputs)
write("raises", saved(Raises()), [("logits", "[-1, 4]")])
write("embed", saved(Embed()), [("logits", "[-1, 4]")],
      input_=("t", "i64", "[-1, 3]"))
EOF
"$PYTHON" "$GEN_DIR/make_bad_models.py" "$MODELS_DIR"

start_node --set "models.root=$MODELS_DIR"

"$PYTHON" - "$ENDPOINT" "$MODELS_DIR" <<'EOF'
import sys
import time

import msgpack
import numpy as np
import zmq

endpoint, root = sys.argv[1], sys.argv[2]
# Model -> words its error must contain besides the file's path.
CASES = {
    "notscript": ["not a TorchScript archive"],
    "truncated": ["not a TorchScript archive"],
    "badsha": ["sha256"],
    "arity": ["forward takes 2 input(s)", "declares 1"],
    "badshape": ["'logits'", "[4, 5]", "[-1, 4]"],
    "baddtype": ["'logits'", "f64", "f32"],
    "nodict": ["'embedding'", "logits"],
    "newer": ["version 99", "maximum supported version", "no newer than"],
}
failures = []
sock = zmq.Context.instance().socket(zmq.DEALER)
sock.setsockopt(zmq.LINGER, 0)
sock.connect(endpoint)
next_id = [1]


def call(**fields):
    rid = next_id[0]
    next_id[0] += 1
    sock.send(msgpack.packb({"v": 1, "id": rid, **fields}, use_bin_type=True))
    deadline = time.monotonic() + 120
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(int(left * 1000) + 1):
            raise SystemExit(f"FAIL: no reply to {fields.get('model')}")
        rep = msgpack.unpackb(sock.recv(), raw=False)
        if rep.get("id") == rid:
            return rep


x = np.arange(32, dtype="<f4").reshape(4, 8)


def infer(model, data=x, name="x", dtype="f32"):
    return call(op="infer", model=model, timeout_ms=120000,
                inputs=[{"name": name, "dtype": dtype, "shape": list(data.shape),
                         "data": data.tobytes()}])


def forward_fails(model, bad, good, words, **kw):
    """INTERNAL naming the exception's own words on one line, then OK."""
    rep = infer(model, bad, **kw)
    err = rep.get("error") or ""
    missing = [w for w in words if w not in err]
    if rep.get("status") != "INTERNAL" or missing or "\n" in err \
            or "TorchScript interpreter" in err:
        failures.append(f"{model}: {rep.get('status')}: {err!r} (missing {missing})")
        print(f"FAIL {model}: {rep.get('status')}: {err!r}")
    else:
        print(f"ok   {model}: INTERNAL: {err}")
    rep = infer(model, good, **kw)
    if rep.get("status") != "OK":
        failures.append(f"{model} after its failure: {rep.get('status')}: {rep.get('error')}")


for model, words in CASES.items():
    rep = infer(model)
    err = rep.get("error") or ""
    path = f"{root}/{model}/1/model.pt"
    missing = [w for w in [path] + words if w not in err]
    if rep.get("status") != "UNAVAILABLE" or missing:
        failures.append(f"{model}: {rep.get('status')}: {err!r} (missing {missing})")
        print(f"FAIL {model}: {rep.get('status')}: {err}")
    else:
        print(f"ok   {model}: UNAVAILABLE: {err}")

forward_fails("raises", x * 100, x,
              ["RuntimeError: boom: the input sum is too large"])
tokens = np.array([[1, 2, 10**9]], dtype="<i8")
forward_fails("embed", tokens, np.array([[1, 2, 3]], dtype="<i8"),
              ["index out of range"], name="t", dtype="i64")

rep = infer("good")
outs = {o["name"]: o for o in rep.get("outputs") or []}
if rep.get("status") != "OK" or sorted(outs) != ["embedding", "logits"]:
    failures.append(f"good: {rep.get('status')}: {rep.get('error')}")
else:
    logits = np.frombuffer(outs["logits"]["data"], dtype="<f4").reshape(4, 4)
    if not np.array_equal(logits, x[:, :4] * 2):
        failures.append("good: wrong logits")
    print("ok   good: OK after the failures")
mlp = infer("mlp", np.zeros((1, 784), dtype="<f4"))
if mlp.get("status") != "OK":
    failures.append(f"mlp: {mlp.get('status')}: {mlp.get('error')}")
else:
    print("ok   mlp: OK after the failures")

if failures:
    print("torch malformed: FAILED")
    for f in failures:
        print("  " + f)
    sys.exit(1)
EOF
echo "torch malformed OK"

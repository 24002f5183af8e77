#!/usr/bin/python3
"""Writes shoal's example models: an MLP classifier and a small CNN.

Run with Debian's python3 and python3-numpy (nothing else, no torch):

    /usr/bin/python3 scripts/make_models.py [--out DIR] [--torch]

--torch also writes the TorchScript examples (needs python3-torch and
python3-torchvision): `resnet18` (torchvision's, image [-1, 3, 224, 224] ->
logits [-1, 1000]) and `text` (an nn.TransformerEncoder classifier over i64
token ids [-1, 64] -> a dict {logits [-1, 4], embedding [-1, 64]}), each a
frozen TorchScript module `model.pt` with `reference.safetensors` holding
inputs and the outputs PyTorch computed (resnet18 for batches 1, 3 and 8,
text for 1, 7 and 32). Their weights are random (seeded), nothing is
downloaded.

DIR defaults to examples/models under the repository root. For each model it
writes <DIR>/<name>/1/ with

  model.toml            the manifest (docs/model_format.md)
  model.safetensors     the weights
  reference.safetensors inputs `input.b{1,7,32}` (f32, random) and the outputs
                        numpy computes for them, `output.b{1,7,32}` (computed in
                        float64 from the stored weights, stored as f32)

The output is deterministic (fixed seeds) and idempotent: running it again
rewrites identical bytes (files whose content is unchanged are not touched).
"""

import argparse
import hashlib
import json
import math
import os
import re
import struct
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH_SIZES = (1, 7, 32)

# numpy dtype -> safetensors dtype name
ST_DTYPES = {
    np.dtype("<f4"): "F32",
    np.dtype("<f2"): "F16",
    np.dtype("<f8"): "F64",
    np.dtype("<i8"): "I64",
}


# ---------------------------------------------------------------- safetensors

def safetensors_bytes(tensors, metadata=None):
    """Serialises {name: np.ndarray} as safetensors.

    Layout: u64 little-endian header length N, N bytes of JSON (padded with
    spaces so that N % 8 == 0), then the tensors' data back to back, in name
    order, little-endian, C order. data_offsets are relative to the byte
    after the header.
    """
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        arr = tensors[name]
        dt = arr.dtype.newbyteorder("<")
        if dt not in ST_DTYPES:
            raise ValueError(f"{name}: unsupported dtype {arr.dtype}")
        data = np.ascontiguousarray(arr, dtype=dt).tobytes(order="C")
        header[name] = {
            "dtype": ST_DTYPES[dt],
            "shape": [int(d) for d in arr.shape],
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), sort_keys=False).encode("utf-8")
    text += b" " * ((-len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def write_file(path, data):
    """Writes data to path atomically; leaves an identical file untouched."""
    if os.path.exists(path):
        with open(path, "rb") as f:
            if f.read() == data:
                return "unchanged"
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return "written"


# ---------------------------------------------------------------- reference ops
# All in float64. Semantics follow PyTorch.

def dense(x, w, b=None):
    y = x @ w.T
    return y + b if b is not None else y


def relu(x):
    return np.maximum(x, 0.0)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def softmax(x):
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def layernorm(x, gamma, beta, eps):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _windows(x, kh, kw, stride, dilation):
    """x [N, C, H, W] -> view [N, C, OH, OW, kh, kw] of the sliding windows."""
    n, c, h, w = x.shape
    sh, sw = stride
    dh, dw = dilation
    oh = (h - dh * (kh - 1) - 1) // sh + 1
    ow = (w - dw * (kw - 1) - 1) // sw + 1
    s = x.strides
    return np.lib.stride_tricks.as_strided(
        x, shape=(n, c, oh, ow, kh, kw),
        strides=(s[0], s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw),
        writeable=False)


def conv2d(x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """torch.nn.functional.conv2d: cross-correlation, NCHW, w [co, ci, kh, kw]."""
    ph, pw = padding
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = _windows(np.ascontiguousarray(x), w.shape[2], w.shape[3], stride, dilation)
    y = np.einsum("ncijkl,ockl->noij", win, w, optimize=True)
    if b is not None:
        y = y + b[None, :, None, None]
    return y


def _pool(x, kernel, stride, padding, reduce, pad_value):
    ph, pw = padding
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    win = _windows(np.ascontiguousarray(x), kernel[0], kernel[1], stride, (1, 1))
    return reduce(win, axis=(4, 5))


def max_pool2d(x, kernel, stride=None, padding=(0, 0)):
    return _pool(x, kernel, stride or kernel, padding, np.max, -np.inf)


def avg_pool2d(x, kernel, stride=None, padding=(0, 0)):
    # count_include_pad=True, as torch's default (irrelevant without padding)
    return _pool(x, kernel, stride or kernel, padding, np.mean, 0.0)


def flatten(x):
    return x.reshape(x.shape[0], -1)


def run_graph(layers, weights, x):
    """Runs a [[layers]] list (as written to model.toml) in float64.

    weights: {name: array}, f16 tensors already given as their f16 values.
    """
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    saved = {}
    for layer in layers:
        op = layer["op"]
        if op == "dense":
            x = dense(x, w[layer["weight"]], w.get(layer.get("bias")))
        elif op == "relu":
            x = relu(x)
        elif op == "gelu":
            x = gelu(x)
        elif op == "softmax":
            x = softmax(x)
        elif op == "layernorm":
            x = layernorm(x, w[layer["weight"]], w[layer["bias"]], layer.get("eps", 1e-5))
        elif op == "conv2d":
            x = conv2d(x, w[layer["weight"]], w.get(layer.get("bias")),
                       tuple(layer.get("stride", (1, 1))),
                       tuple(layer.get("padding", (0, 0))),
                       tuple(layer.get("dilation", (1, 1))))
        elif op == "max_pool2d":
            x = max_pool2d(x, tuple(layer["kernel"]), layer.get("stride"),
                           tuple(layer.get("padding", (0, 0))))
        elif op == "avg_pool2d":
            x = avg_pool2d(x, tuple(layer["kernel"]), layer.get("stride"),
                           tuple(layer.get("padding", (0, 0))))
        elif op == "flatten":
            x = flatten(x)
        elif op == "add":
            x = x + saved[layer["from"]]
        else:
            raise ValueError(f"unknown op {op}")
        if "save" in layer:
            saved[layer["save"]] = x
    return x


# ---------------------------------------------------------------- models

def he(rng, shape, fan_in, gain=1.0):
    return (rng.standard_normal(shape) * (gain * math.sqrt(2.0 / fan_in))).astype(np.float32)


def small(rng, shape, scale=0.05):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def make_mlp():
    rng = np.random.default_rng(20240101)
    weights = {
        "fc1.weight": he(rng, (512, 784), 784),
        "fc1.bias": small(rng, (512,)),
        "fc2.weight": he(rng, (10, 512), 512, 2.5),
        "fc2.bias": small(rng, (10,)),
    }
    layers = [
        {"op": "dense", "weight": "fc1.weight", "bias": "fc1.bias"},
        {"op": "relu"},
        {"op": "dense", "weight": "fc2.weight", "bias": "fc2.bias"},
        {"op": "softmax"},
    ]
    inputs = {n: rng.random((n, 784), dtype=np.float32) for n in BATCH_SIZES}
    return {
        "name": "mlp",
        "comment": "An MLP classifier: 784 -> 512 (relu) -> 10 (softmax), f32 weights.",
        "input": ("x", [-1, 784]),
        "output": ("probs", [-1, 10]),
        "max_batch": 32,
        "max_delay_us": 500,
        "weights": weights,
        "layers": layers,
        "inputs": inputs,
    }


def make_cnn():
    rng = np.random.default_rng(20240202)
    weights = {
        "conv1.weight": he(rng, (8, 1, 3, 3), 1 * 9),
        "conv1.bias": small(rng, (8,)),
        "conv2.weight": he(rng, (16, 8, 3, 3), 8 * 9),
        "conv2.bias": small(rng, (16,)),
        "fc1.weight": he(rng, (64, 784), 784),
        "fc1.bias": small(rng, (64,)),
        "ln.weight": (1.0 + 0.1 * rng.standard_normal(64)).astype(np.float32),
        "ln.bias": small(rng, (64,), 0.1),
        # stored as F16 to exercise the conversion at load
        "fc2.weight": he(rng, (64, 64), 64, 0.7).astype(np.float16),
        "fc2.bias": small(rng, (64,)),
        "fc3.weight": he(rng, (10, 64), 64, 0.7),
        "fc3.bias": small(rng, (10,)),
    }
    layers = [
        {"op": "conv2d", "weight": "conv1.weight", "bias": "conv1.bias", "padding": [1, 1]},
        {"op": "relu"},
        {"op": "max_pool2d", "kernel": [2, 2]},
        {"op": "conv2d", "weight": "conv2.weight", "bias": "conv2.bias", "padding": [1, 1]},
        {"op": "relu"},
        {"op": "avg_pool2d", "kernel": [2, 2]},
        {"op": "flatten"},
        {"op": "dense", "weight": "fc1.weight", "bias": "fc1.bias", "save": "h1"},
        {"op": "layernorm", "weight": "ln.weight", "bias": "ln.bias", "eps": 1e-5},
        {"op": "gelu"},
        {"op": "dense", "weight": "fc2.weight", "bias": "fc2.bias"},
        {"op": "add", "from": "h1"},
        {"op": "dense", "weight": "fc3.weight", "bias": "fc3.bias"},
        {"op": "softmax"},
    ]
    inputs = {n: rng.random((n, 1, 28, 28), dtype=np.float32) for n in BATCH_SIZES}
    return {
        "name": "cnn",
        "comment": ("A small CNN: conv 1->8 3x3, relu, maxpool 2; conv 8->16 3x3, relu, "
                    "avgpool 2;\n# flatten; dense 784->64 (saved), layernorm, gelu, "
                    "dense 64->64 (f16 weight) + residual;\n# dense 64->10, softmax."),
        "input": ("image", [-1, 1, 28, 28]),
        "output": ("probs", [-1, 10]),
        "max_batch": 32,
        "max_delay_us": 500,
        "weights": weights,
        "layers": layers,
        "inputs": inputs,
    }


# ---------------------------------------------------------------- model.toml

def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return re.sub(r"e([+-])0*(\d)", r"e\1\2", repr(v))  # 1e-05 -> 1e-5
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string for these names
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def manifest(model, weights_sha, weights_size):
    name_in, shape_in = model["input"]
    name_out, shape_out = model["output"]
    out = [
        f"# {model['comment']}",
        "# Generated by scripts/make_models.py; reference.safetensors holds inputs",
        "# and the outputs numpy computes for them.",
        'backend = "cpu"',
        "",
        "[[inputs]]",
        f"name = {toml_value(name_in)}",
        'dtype = "f32"',
        f"shape = {toml_value(shape_in)}",
        "",
        "[[outputs]]",
        f"name = {toml_value(name_out)}",
        'dtype = "f32"',
        f"shape = {toml_value(shape_out)}",
        "",
        "[batching]",
        f"max_batch = {model['max_batch']}",
        f"max_delay_us = {model['max_delay_us']}",
        "",
        "[cache]",
        "enabled = true",
        "ttl_ms = 0",
        "",
        "[resources]",
        'device = "cpu"',
        f"memory_bytes = {weights_size}",
        "",
        "[weights]",
        'file = "model.safetensors"',
        "",
        "[files]",
        f'"model.safetensors" = "{weights_sha}"',
    ]
    for layer in model["layers"]:
        out += ["", "[[layers]]"]
        for k, v in layer.items():
            out.append(f"{k} = {toml_value(v)}")
    return ("\n".join(out) + "\n").encode("utf-8")


# ---------------------------------------------------------------- main

def build(model, out_dir):
    vdir = os.path.join(out_dir, model["name"], "1")
    os.makedirs(vdir, exist_ok=True)
    weights = model["weights"]
    wbytes = safetensors_bytes(weights, {"format": "pt", "generator": "shoal make_models.py"})
    sha = hashlib.sha256(wbytes).hexdigest()

    ref = {}
    stats = []
    for n, x in model["inputs"].items():
        y = run_graph(model["layers"], weights, x.astype(np.float64))
        assert y.shape == (n, 10), y.shape
        ref[f"input.b{n}"] = x
        ref[f"output.b{n}"] = y.astype(np.float32)
        stats.append((n, float(y.max()), float(y.min())))
    rbytes = safetensors_bytes(ref, {"model": model["name"], "version": "1"})
    mbytes = manifest(model, sha, len(wbytes))

    results = []
    for fname, data in (("model.safetensors", wbytes), ("reference.safetensors", rbytes),
                        ("model.toml", mbytes)):
        path = os.path.join(vdir, fname)
        results.append((path, len(data), write_file(path, data)))
    return sha, results, stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "examples", "models"),
                    help="model repository root (default: examples/models)")
    ap.add_argument("--torch", action="store_true",
                    help="also write the TorchScript examples (resnet18, text)")
    args = ap.parse_args()
    t0 = time.monotonic()
    if args.torch:
        import make_torch_models  # beside this file; needs python3-torch
        make_torch_models.main(args.out)
    for model in (make_mlp(), make_cnn()):
        sha, results, stats = build(model, args.out)
        nparams = sum(int(v.size) for v in model["weights"].values())
        print(f"{model['name']}/1: {nparams} parameters, model.safetensors sha256 {sha}")
        for path, size, what in results:
            print(f"  {path}  {size} bytes ({what})")
        for n, pmax, pmin in stats:
            print(f"  reference b{n}: probs max {pmax:.4f} min {pmin:.2e}")
    print(f"done in {time.monotonic() - t0:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

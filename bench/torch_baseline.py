#!/usr/bin/env python3
"""The PyTorch baseline of bench_gpu_executor: the same model at the same batch size and precision.

Reads a model as shoal does (DIR/<name>/1/model.toml and its safetensors
weights), builds the same layer graph with torch.nn.functional, and measures
what shoal's GPU executor does per batch:

    pinned host f32 input -> device, forward, device -> pinned host output,
    the host waiting for every batch's output,

with the same pipelining allowance as shoal's CUDA backend (max_in_flight 2:
batch k+1's input is copied on a copy stream while batch k computes on the
compute stream; forward and output copy of successive batches run in order
on the compute stream). `--inflight 1` runs the batches one after the other.

Precision: f32 with TF32 off (matmul and cuDNN), f16 weights (the CNN's fc2)
computed in f16 with f32 accumulation, output as f32, as shoal's backend
does; `--tf32` allows TF32 on f32 layers on both sides.

Prints one JSON line per model and batch size on stdout:
    {"model", "batch", "batches_per_s", "rows_per_s", "wall_ms",
     "kernel_ms", "copy_in_ms", "copy_out_ms", "overhead_ms", "overhead_pct", ...}
kernel/copy times come from a separate, serial pass with CUDA events around
work queued behind a spin kernel (device time without launch gaps); the timed
pass has no events, so that they cost the baseline nothing.

`--check` instead runs the reference inputs of DIR/<name>/1/reference.safetensors
(input.b{1,7,32}) and compares with output.b{1,7,32}, to catch a mistake in the
graph translation; `--device cpu` lets it run without a GPU.

Exits 77 (skipped) when torch or a CUDA device is missing, 2 on bad usage or
an unreadable model, 1 when --check finds a difference.
"""

import argparse
import json
import os
import struct
import sys
import time

SKIP = 77
POOL = 8  # distinct inputs per batch size, cycled
# About 2-5 ms of spinning on a GPU at 1-2.5 GHz: longer than Python takes
# to launch one batch of these models.
SPIN_CYCLES = 5_000_000


def die(msg, code=2):
    print(f"torch_baseline: {msg}", file=sys.stderr)
    sys.exit(code)


def parse_args():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Exits 77 without torch or a CUDA device.")
    ap.add_argument("--models",
                    help="model repository (scripts/make_models.py --out DIR); "
                         "required but with --probe")
    ap.add_argument("--names", default="mlp,cnn", help="models (default mlp,cnn)")
    ap.add_argument("--batches", default="1,8,64", help="batch sizes (default 1,8,64)")
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="timed seconds per model and batch size (default 3)")
    ap.add_argument("--inflight", type=int, default=2,
                    help="batches in flight: 2 overlaps the next input copy "
                         "with the current forward, as shoal's CUDA backend "
                         "(max_in_flight 2); 1 runs them serially (default 2)")
    ap.add_argument("--tf32", action="store_true",
                    help="allow TF32 for f32 matmul and convolution")
    ap.add_argument("--no-cudnn-benchmark", action="store_true",
                    help="leave torch.backends.cudnn.benchmark off (by default "
                         "on: cuDNN picks the fastest convolution algorithm "
                         "during the warm-up)")
    ap.add_argument("--check", action="store_true",
                    help="compare outputs for the reference inputs instead of timing")
    ap.add_argument("--probe", action="store_true",
                    help="print the CUDA device and exit (77 when there is none)")
    ap.add_argument("--device", default="cuda",
                    help="torch device (default cuda; cpu only with --check)")
    a = ap.parse_args()
    if not a.models and not a.probe:
        ap.error("--models DIR is required")
    try:
        a.names = [n for n in a.names.split(",") if n]
        a.batches = [int(b) for b in a.batches.split(",") if b]
    except ValueError:
        ap.error("--batches takes integers: 1,8,64")
    if not a.names or not a.batches or min(a.batches) < 1:
        ap.error("--names and --batches must not be empty; batches >= 1")
    if a.seconds <= 0 or a.inflight < 1:
        ap.error("--seconds and --inflight must be positive")
    if a.device != "cuda" and not a.check:
        ap.error("timing runs on cuda only; --device cpu is for --check")
    return a


# ---------------------------------------------------------------- model files

def load_toml(path):
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            die("needs Python >= 3.11 (tomllib) or the tomli package")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        die(f"{path}: {e}")


def load_safetensors(path, torch):
    """{name: CPU tensor} of a safetensors file, parsed by hand.

    Layout: u64 little-endian header length N, N bytes of JSON
    {name: {dtype, shape, data_offsets: [begin, end]}} (offsets relative to
    the byte after the header), then the data, little-endian, row-major.
    """
    dtypes = {"F32": torch.float32, "F16": torch.float16,
              "BF16": torch.bfloat16, "F64": torch.float64}
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        die(f"{path}: {e}")
    (n,) = struct.unpack_from("<Q", blob, 0)
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in dtypes:
            die(f"{path}: {name}: dtype {info['dtype']} is not a float type")
        begin, end = info["data_offsets"]
        shape = [int(d) for d in info["shape"]]
        dt = dtypes[info["dtype"]]
        if begin == end:
            out[name] = torch.empty(shape, dtype=dt)
            continue
        # A bytearray of its own: writable (no warning) and aligned.
        t = torch.frombuffer(bytearray(blob[base + begin:base + end]), dtype=dt)
        out[name] = t.reshape(shape)
    return out


def pair(layer, key, default):
    v = layer.get(key, default)
    return tuple(int(x) for x in v)


class Model:
    """A model.toml graph on a torch device, run with torch.nn.functional."""

    def __init__(self, root, name, torch, device):
        import torch.nn.functional as F
        self.torch, self.F = torch, F
        self.name = name
        self.dir = os.path.join(root, name, "1")
        m = load_toml(os.path.join(self.dir, "model.toml"))
        if len(m.get("inputs", [])) != 1 or len(m.get("outputs", [])) != 1:
            die(f"{self.dir}/model.toml: one input and one output expected")
        self.in_shape = [int(d) for d in m["inputs"][0]["shape"]]
        if self.in_shape[0] != -1 or m["inputs"][0].get("dtype", "f32") != "f32":
            die(f"{self.dir}/model.toml: an f32 input with the batch axis first expected")
        wfile = m.get("weights", {}).get("file")
        raw = load_safetensors(os.path.join(self.dir, wfile), torch) if wfile else {}
        self.w = {}
        for k, v in raw.items():
            # f64 weights compute in f32, as shoal converts them.
            v = v.float() if v.dtype == torch.float64 else v
            self.w[k] = v.to(device).contiguous()
        self.layers = m.get("layers", [])
        if not self.layers:
            die(f"{self.dir}/model.toml: no [[layers]]")
        for i, layer in enumerate(self.layers):
            for key in ("weight", "bias"):
                if key in layer and layer[key] not in self.w:
                    die(f"{self.dir}/model.toml: layers[{i}].{key}: "
                        f"'{layer[key]}' not in {wfile}")
        self.f32_out_mm = self._probe_out_dtype(device)
        self.steps = [(self._step(i, layer), layer.get("save"), layer.get("from"))
                      for i, layer in enumerate(self.layers)]

    def _probe_out_dtype(self, device):
        """Whether torch.mm takes out_dtype (f16 x f16 -> f32, newer torch).

        Without it the f16 product is rounded to f16 before the cast to f32:
        a 2^-11 relative rounding that shoal's f32 output does not have, and
        no difference in speed worth speaking of.
        """
        torch = self.torch
        a = torch.ones((2, 2), dtype=torch.float16, device=device)
        try:
            return torch.mm(a, a, out_dtype=torch.float32).dtype == torch.float32
        except (TypeError, RuntimeError):
            return False

    def _matmul_f16(self, x, w):
        """x [n, in] f32, w [out, in] f16: f16 inputs, f32 accumulation, f32 out."""
        torch = self.torch
        if w.device.type == "cpu":
            # --check on the CPU, where torch may have no f16 GEMM: the same
            # products (f16 x f16 is exact in f32), summed in f32.
            return torch.mm(x.half().float(), w.float().t())
        if self.f32_out_mm:
            return torch.mm(x.half(), w.t(), out_dtype=torch.float32)
        return torch.mm(x.half(), w.t()).float()

    def _bias(self, layer):
        b = layer.get("bias")
        return None if b is None else self.w[b].float()

    def _step(self, i, layer):
        """The layer as a function of its input, resolved once, so that a
        forward pays torch's dispatch and nothing of the manifest's lookups."""
        F, torch = self.F, self.torch
        op = layer["op"]
        w = self.w.get(layer.get("weight"))
        b = self._bias(layer)
        if op == "dense":
            if w.dtype == torch.float32:
                return lambda x: F.linear(x, w, b)
            if w.dtype == torch.float16:
                mm = self._matmul_f16
                return (lambda x: mm(x, w)) if b is None else (lambda x: mm(x, w) + b)
            # bf16: in its dtype, f32 out
            if b is None:
                return lambda x: F.linear(x.to(w.dtype), w).float()
            return lambda x: F.linear(x.to(w.dtype), w).float() + b
        if op == "relu":
            return F.relu
        if op == "gelu":
            return F.gelu  # the erf form (approximate="none")
        if op == "softmax":
            return lambda x: F.softmax(x, dim=-1)
        if op == "layernorm":
            gamma, eps = w.float(), float(layer.get("eps", 1e-5))
            return lambda x: F.layer_norm(x, (x.shape[-1],), gamma, b, eps)
        if op == "conv2d":
            args = dict(stride=pair(layer, "stride", (1, 1)),
                        padding=pair(layer, "padding", (0, 0)),
                        dilation=pair(layer, "dilation", (1, 1)))
            if w.dtype == torch.float32:
                return lambda x: F.conv2d(x, w, b, **args)
            # low-precision weights: computed in their dtype, f32 out
            if b is None:
                return lambda x: F.conv2d(x.to(w.dtype), w, None, **args).float()
            b4 = b[None, :, None, None]
            return lambda x: F.conv2d(x.to(w.dtype), w, None, **args).float() + b4
        if op in ("max_pool2d", "avg_pool2d"):
            kernel = pair(layer, "kernel", (2, 2))
            stride = pair(layer, "stride", kernel)
            padding = pair(layer, "padding", (0, 0))
            if op == "max_pool2d":
                return lambda x: F.max_pool2d(x, kernel, stride, padding, ceil_mode=False)
            return lambda x: F.avg_pool2d(x, kernel, stride, padding, ceil_mode=False,
                                          count_include_pad=True)
        if op == "flatten":
            return lambda x: x.flatten(1)
        if op == "add":
            return None  # needs the saved operand: see forward()
        die(f"{self.dir}/model.toml: layers[{i}]: unknown op '{op}'")

    def forward(self, x):
        saved = {}
        for fn, save, source in self.steps:
            x = fn(x) if fn is not None else x + saved[source]
            if save:
                saved[save] = x
        return x


# ---------------------------------------------------------------- torch setup

def import_torch(device):
    try:
        import torch
    except ModuleNotFoundError:
        print("torch_baseline: skipped: PyTorch is not installed for "
              f"{sys.executable}", file=sys.stderr)
        sys.exit(SKIP)
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"torch_baseline: skipped: no CUDA device (torch {torch.__version__}, "
              f"built for CUDA {torch.version.cuda})", file=sys.stderr)
        sys.exit(SKIP)
    return torch


def set_precision(torch, tf32, cudnn_benchmark):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    # f16 GEMMs accumulate in f32 throughout, as shoal's do (torch may
    # otherwise reduce split-K partial sums in f16).
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    torch.backends.cudnn.benchmark = cudnn_benchmark


# ---------------------------------------------------------------- check

def check(args, torch):
    device = torch.device(args.device)
    # Probabilities in [0, 1]: absolute error. f16 activations in one layer
    # (CNN fc2) and TF32 products are the loosest parts.
    tol = 2e-2 if args.tf32 else 5e-3
    failed = False
    for name in args.names:
        model = Model(args.models, name, torch, device)
        ref_path = os.path.join(model.dir, "reference.safetensors")
        if not os.path.exists(ref_path):
            die(f"{ref_path}: missing (scripts/make_models.py writes it)")
        ref = load_safetensors(ref_path, torch)
        for n in (1, 7, 32):
            x, want = ref.get(f"input.b{n}"), ref.get(f"output.b{n}")
            if x is None or want is None:
                continue
            with torch.inference_mode():
                got = model.forward(x.to(device)).float().cpu()
            if got.shape != want.shape:
                print(f"{name} b{n}: shape {list(got.shape)}, expected "
                      f"{list(want.shape)}  FAIL")
                failed = True
                continue
            err = (got - want).abs().max().item()
            ok = err <= tol
            failed |= not ok
            print(f"{name} b{n}: max abs error {err:.3g} (tolerance {tol:g})  "
                  f"{'ok' if ok else 'FAIL'}")
    return 1 if failed else 0


# ---------------------------------------------------------------- timing

class Pipeline:
    """Batches of one size through pinned buffers, `inflight` at a time.

    A copy stream brings inputs in; the compute stream waits for them, runs
    the forward and the output copy. With 2 in flight, batch k+1's input
    copy overlaps batch k's forward; the forwards themselves stay in order
    on one stream, as in shoal's CUDA backend.
    """

    def __init__(self, torch, model, batch, inflight, gen):
        self.torch, self.model, self.batch = torch, model, batch
        self.n = inflight
        shape = [batch] + model.in_shape[1:]
        dev = torch.device("cuda")
        # Host inputs: random, pinned, POOL of them cycled.
        self.pool = [torch.rand(shape, generator=gen).pin_memory() for _ in range(POOL)]
        self.dev_in = [torch.empty(shape, device=dev) for _ in range(self.n)]
        with torch.inference_mode():
            out_shape = model.forward(self.dev_in[0]).shape
        self.host_out = [torch.empty(out_shape).pin_memory() for _ in range(self.n)]
        self.copy_stream = torch.cuda.Stream()
        self.compute_stream = torch.cuda.Stream()
        self.copied = [torch.cuda.Event() for _ in range(self.n)]
        self.done = [torch.cuda.Event() for _ in range(self.n)]
        self.k = 0
        torch.cuda.synchronize()

    def launch(self):
        torch, s = self.torch, self.k % self.n
        with torch.cuda.stream(self.copy_stream):
            self.dev_in[s].copy_(self.pool[self.k % POOL], non_blocking=True)
            self.copied[s].record(self.copy_stream)
        self.compute_stream.wait_event(self.copied[s])
        with torch.cuda.stream(self.compute_stream):
            y = self.model.forward(self.dev_in[s])
            self.host_out[s].copy_(y, non_blocking=True)
            self.done[s].record(self.compute_stream)
        self.k += 1

    def run(self, seconds):
        """Batches per second over `seconds`: the window drains before the
        clock stops, so every batch counted has its output on the host."""
        started = finished = 0
        t0 = time.perf_counter()
        until = t0 + seconds
        for _ in range(self.n):
            self.launch()
            started += 1
        while time.perf_counter() < until:
            self.done[finished % self.n].synchronize()
            finished += 1
            self.launch()
            started += 1
        while finished < started:
            self.done[finished % self.n].synchronize()
            finished += 1
        return finished / (time.perf_counter() - t0)

    def profile(self, seconds):
        """Device time per batch of the input copy, the forward and the output
        copy, from CUDA events, one batch at a time on one stream (so that
        no other batch's work falls between a batch's events).

        Each batch is queued behind a spin kernel (torch.cuda._sleep) that
        outlasts the host's launches, so the GPU then runs it back to back:
        the events time the device's work, not the gaps in which it waited
        for Python to launch the next kernel (that wait is overhead).
        Returns (copy_in, kernel, copy_out) in ms and whether it could
        queue so.
        """
        torch = self.torch
        sleep = getattr(torch.cuda, "_sleep", None)
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        stream = self.compute_stream
        sums = [0.0, 0.0, 0.0]
        n = 0
        until = time.perf_counter() + seconds
        with torch.cuda.stream(stream):
            while time.perf_counter() < until or n == 0:
                if sleep is not None:
                    sleep(SPIN_CYCLES)
                ev[0].record(stream)
                self.dev_in[0].copy_(self.pool[n % POOL], non_blocking=True)
                ev[1].record(stream)
                y = self.model.forward(self.dev_in[0])
                ev[2].record(stream)
                self.host_out[0].copy_(y, non_blocking=True)
                ev[3].record(stream)
                ev[3].synchronize()
                for i in range(3):
                    sums[i] += ev[i].elapsed_time(ev[i + 1])  # ms
                n += 1
        return [v / n for v in sums], sleep is not None


def bench(args, torch):
    gen = torch.Generator().manual_seed(7)
    for name in args.names:
        model = Model(args.models, name, torch, torch.device("cuda"))
        for batch in args.batches:
            with torch.inference_mode():
                p = Pipeline(torch, model, batch, args.inflight, gen)
                # Warm-up: lazy module loading, cuDNN autotuning, allocator.
                p.run(min(0.5, args.seconds))
                rate = p.run(args.seconds)
                (copy_in, kernel, copy_out), queued = p.profile(min(1.0, args.seconds / 3))
            wall = 1e3 / rate
            print(json.dumps({
                "model": name, "batch": batch,
                "batches_per_s": rate, "rows_per_s": rate * batch,
                "wall_ms": wall, "kernel_ms": kernel,
                "copy_in_ms": copy_in, "copy_out_ms": copy_out,
                "overhead_ms": wall - kernel,
                "overhead_pct": 100 * (wall - kernel) / wall,
                "kernel_timing": "queued" if queued else "events",
                "inflight": args.inflight, "tf32": args.tf32,
                "cudnn_benchmark": torch.backends.cudnn.benchmark,
                "f16_mm_f32_out": model.f32_out_mm,
                "torch": torch.__version__,
                "device": torch.cuda.get_device_name(),
            }), flush=True)
            print(f"torch {name} batch {batch}: {rate:.0f} batches/s "
                  f"(kernel {kernel:.4f} ms, wall {wall:.4f} ms)", file=sys.stderr)
    return 0


def main():
    args = parse_args()
    torch = import_torch(args.device)
    if args.probe:
        print(f"torch {torch.__version__}: "
              f"{torch.cuda.get_device_name() if args.device == 'cuda' else args.device}")
        return 0
    if args.device.startswith("cuda"):
        set_precision(torch, args.tf32, not args.no_cudnn_benchmark)
    return check(args, torch) if args.check else bench(args, torch)


if __name__ == "__main__":
    sys.exit(main())

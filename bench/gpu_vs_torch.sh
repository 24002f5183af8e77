#!/usr/bin/env bash
# The GPU performance target on a GPU machine: shoal's GPU executor
# against the same models in PyTorch, at batch 1, 8 and 64, in one run.
#
#   bench/gpu_vs_torch.sh [--build DIR] [--models DIR] [--seconds S]
#                         [--batches 1,8,64] [--rounds N] [--tf32]
#
# Runs bench/bench_gpu_executor (shoal) and bench/torch_baseline.py (PyTorch)
# one after the other, never at once (they would share the GPU), N rounds
# (default 2) with the order swapped each round, so that drift of clocks or
# temperature hits both sides alike; then prints per model and batch size
# the executor's batches/s, PyTorch's, their ratio against the 0.9 target,
# and the split of each side's wall time per batch into kernel time and
# overhead. See bench/README.md.
#
# Environment: PYTHON (default python3) must have torch with CUDA and numpy;
# LD_LIBRARY_PATH applies to both sides; libraries carried in DIR/libs or
# DIR/libs.tgz (see bench/README.md) are added to the bench's path only.
#
# Exit status: 0 whether the targets pass or fail; 77 (skipped) without a
# GPU or without PyTorch on CUDA; 2 on bad usage; 1 when something broke.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
build=${BUILD:-$root/build}
python=${PYTHON:-python3}
models=""
seconds=3
batches=1,8,64
rounds=2
tf32=()

usage() {
  sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

while [ $# -gt 0 ]; do
  case $1 in
    --build) build=${2:?--build needs a directory}; shift 2 ;;
    --models) models=${2:?--models needs a directory}; shift 2 ;;
    --seconds) seconds=${2:?--seconds needs a value}; shift 2 ;;
    --batches) batches=${2:?--batches needs a list}; shift 2 ;;
    --rounds) rounds=${2:?--rounds needs a value}; shift 2 ;;
    --tf32) tf32=(--tf32); shift ;;
    -h | --help) usage 0 ;;
    *) echo "gpu_vs_torch: unknown option $1" >&2; usage 2 ;;
  esac
done
case $rounds in
  '' | *[!0-9]* | 0) echo "gpu_vs_torch: --rounds must be a positive integer" >&2; exit 2 ;;
esac

# No GPU at all: skip before asking for a build or PyTorch.
if ! compgen -G '/proc/driver/nvidia/gpus/*' >/dev/null &&
  ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  echo "gpu_vs_torch: skipped: no NVIDIA GPU on this machine" >&2
  exit 77
fi

bench=$build/bench/bench_gpu_executor
if [ ! -x "$bench" ]; then
  echo "gpu_vs_torch: $bench not found; build it (ninja -C BUILD" \
    "bench/bench_gpu_executor) or pass --build BUILD" >&2
  exit 2
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_vs_torch.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Debian's libraries, carried beside the build (bench/README.md), are for
# the bench only: PyTorch brings its own and must not pick these up. They
# may come packed as libs.tgz (a third of the size, mostly OpenBLAS).
libs=$build/libs
if [ ! -d "$libs" ] && [ -f "$build/libs.tgz" ]; then
  tar xzf "$build/libs.tgz" -C "$work"
  libs=$work/libs
fi
bench_path=${LD_LIBRARY_PATH:-}
if [ -d "$libs" ]; then
  bench_path=$libs${bench_path:+:$bench_path}
fi
run_bench() {
  LD_LIBRARY_PATH=$bench_path "$bench" "$@"
}
missing=$(LD_LIBRARY_PATH=$bench_path ldd "$bench" 2>/dev/null | grep 'not found' || true)
if [ -n "$missing" ]; then
  echo "gpu_vs_torch: $bench cannot start, libraries not found:" >&2
  echo "$missing" >&2
  echo "(put them in $build/libs or add their folder to LD_LIBRARY_PATH;" \
    "see bench/README.md)" >&2
  exit 1
fi

# Skip before any work when either side has no GPU.
rc=0
run_bench --probe >&2 || rc=$?
if [ "$rc" -ne 0 ]; then
  [ "$rc" -eq 77 ] && echo "gpu_vs_torch: skipped (no GPU for shoal)" >&2
  exit "$rc"
fi
rc=0
"$python" "$here/torch_baseline.py" --probe >&2 || rc=$?
if [ "$rc" -ne 0 ]; then
  [ "$rc" -eq 77 ] && echo "gpu_vs_torch: skipped (no PyTorch on CUDA for" \
    "$python; set PYTHON)" >&2
  exit "$rc"
fi

if [ -z "$models" ]; then
  models=$work/models
  # The generator needs numpy: PyTorch's Python has it where the system's
  # may not.
  if ! "$python" "$root/scripts/make_models.py" --out "$models" >/dev/null &&
    ! /usr/bin/python3 "$root/scripts/make_models.py" --out "$models" >/dev/null; then
    echo "gpu_vs_torch: could not generate the models (make_models.py needs" \
      "numpy); pass --models DIR" >&2
    exit 1
  fi
fi

common=(--models "$models" --seconds "$seconds" --batches "$batches" "${tf32[@]}")
run_shoal() {
  echo "== round $1: shoal" >&2
  # Its table goes to stderr with the progress; the comparison reads the JSON.
  run_bench "${common[@]}" --json "$work/shoal.$1.json" >&2
}
run_torch() {
  echo "== round $1: torch" >&2
  "$python" "$here/torch_baseline.py" "${common[@]}" >"$work/torch.$1.jsonl"
}
for ((r = 1; r <= rounds; r++)); do
  if [ $((r % 2)) -eq 1 ]; then
    run_shoal "$r"
    run_torch "$r"
  else
    run_torch "$r"
    run_shoal "$r"
  fi
done

"$python" - "$work" "$rounds" <<'EOF'
import json
import sys

work, rounds = sys.argv[1], int(sys.argv[2])
shoal, torch = {}, {}  # (model, batch) -> [per-round dicts]
for r in range(1, rounds + 1):
    with open(f"{work}/shoal.{r}.json") as f:
        doc = json.load(f)
    for x in doc["results"]:
        shoal.setdefault((x["model"], x["batch"]), []).append(x)
    with open(f"{work}/torch.{r}.jsonl") as f:
        for line in f:
            if line.strip():
                x = json.loads(line)
                torch.setdefault((x["model"], x["batch"]), []).append(x)


def mean(xs, key):
    vals = [x[key] for x in xs if x.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def ms(v):
    return "   n/a" if v is None else f"{v:6.3f}"


def split(xs):
    wall, kernel = mean(xs, "wall_ms"), mean(xs, "kernel_ms")
    if kernel is None:
        return f"{ms(wall)} {ms(None)} {ms(None)}        "
    over = wall - kernel
    return f"{ms(wall)} {ms(kernel)} {ms(over)} ({100 * over / wall:5.1f}%)"


print(f"\nGPU {doc['product']} ({doc['device']}), {doc['seconds']} s per phase, "
      f"{rounds} round(s), TF32 {'allowed' if doc['tf32'] else 'off'}; "
      f"torch {next(iter(torch.values()))[0]['torch']}")
print("ratio = shoal executor batches/s / torch batches/s (means of the rounds); "
      "target >= 0.9")
print("times per batch in ms: wall = 1 / backend (torch: pipeline) rate; "
      "kernel = device time of the layers; overhead = wall - kernel\n")
head = (f"{'model':5} {'batch':>5} | {'executor/s':>10} {'torch/s':>10} {'ratio':>6} "
        f"{'result':6} | {'backend/s':>10} | {'shoal wall  kernel  overhead':29} | "
        f"{'torch wall  kernel  overhead':29} | rounds' ratios")
print(head)
print("-" * len(head))
failed = 0
for key in shoal:  # in the bench's order
    s, t = shoal[key], torch.get(key)
    if not t:
        print(f"{key[0]:5} {key[1]:5} | no torch result")
        failed += 1
        continue
    ex, tb = mean(s, "executor_batches_per_s"), mean(t, "batches_per_s")
    ratio = ex / tb
    per_round = " ".join(f"{a['executor_batches_per_s'] / b['batches_per_s']:.2f}"
                         for a, b in zip(s, t))
    print(f"{key[0]:5} {key[1]:5} | {ex:10.0f} {tb:10.0f} {ratio:6.3f} "
          f"{'PASS' if ratio >= 0.9 else 'FAIL':6} | {mean(s, 'backend_batches_per_s'):10.0f} | "
          f"{split(s)} | {split(t)} | {per_round}")
    depth = s[0].get("max_in_flight")
    if depth is not None and depth != t[0]["inflight"]:
        print(f"      note: shoal's backend keeps {depth} batches in flight, "
              f"torch ran with {t[0]['inflight']}")
sys.exit(1 if failed else 0)
EOF

# A backend added by one file: tests/integration/test_backend_registry.cpp
# defines `polynomial` and registers it in one line; its binary is a whole
# node (shoald_main). Started as a real node on free loopback ports with a
# temporary repository, it serves the model (checked against the
# polynomial, and on the executor, then from the cache), lists it, and its
# section parser's errors name the file and the key. The stock shoald does
# not know the backend.
source "$(dirname "$0")/lib.sh"

: "${BACKEND_REGISTRY_NODE:?BACKEND_REGISTRY_NODE must point at test_backend_registry}"
STOCK_SHOALD=$SHOALD
SHOALD=$BACKEND_REGISTRY_NODE

scratch_dir WORK shoal-backend-registry

# write_model ROOT NAME SECTION: a polynomial model over rows of 3 floats.
write_model() {
  mkdir -p "$1/$2/1"
  cat >"$1/$2/1/model.toml" <<TOML
backend = "polynomial"

[[inputs]]
name = "x"
dtype = "f32"
shape = [-1, 3]

[[outputs]]
name = "y"
dtype = "f32"
shape = [-1, 3]

[batching]
max_batch = 8
max_delay_us = 100

$3
TOML
}

write_model "$WORK/good" poly $'[polynomial]\ncoefficients = [1.0, -2.0, 0.5]'

# The section parser's errors, from --check-config (every manifest read,
# nothing started): exit 2, the file and the key named.
expect_manifest_error() {
  local root=$WORK/bad-$1 out rc
  write_model "$root" bad "$2"
  set +e
  out=$("$SHOALD" --check-config --set "models.root=$root" 2>&1)
  rc=$?
  set -e
  [[ $rc == 2 ]] || { echo "check-config of $1 exited $rc: $out"; exit 1; }
  grep -qF "$root/bad/1/model.toml: $3" <<<"$out" ||
    { echo "expected '$3' naming the file, got: $out"; exit 1; }
}
expect_manifest_error unknown-key $'[polynomial]\ncoefficients = [1]\ndegree = 2' \
  "polynomial.degree: unknown key"
expect_manifest_error not-numbers $'[polynomial]\ncoefficients = ["one"]' \
  "polynomial.coefficients: expected 1 to 8 numbers"
expect_manifest_error missing "" "polynomial: required"
# Another backend's section is not the polynomial's.
expect_manifest_error layers $'[polynomial]\ncoefficients = [1]\n[[layers]]\nop = "relu"' \
  'layers: unknown key for backend = "polynomial"'

"$SHOALD" --check-config --set "models.root=$WORK/good" | grep -q "1 model(s)"
set +e
out=$("$STOCK_SHOALD" --check-config --set "models.root=$WORK/good" 2>&1)
set -e
grep -qF "backend: unknown backend 'polynomial'" <<<"$out" ||
  { echo "the stock shoald should not know polynomial: $out"; exit 1; }

start_node --set "models.root=$WORK/good"
ctl() { "$SHOALCTL" --endpoint "$ENDPOINT" "$@"; }

ctl models | grep -q poly
first=$(ctl --json infer poly --input "x:f32:2,3:-1,0,1,2,3,4")
second=$(ctl --json infer poly --input "x:f32:2,3:-1,0,1,2,3,4")
"$PYTHON" - "$first" "$second" <<'PY'
import json, sys
first, second = (json.loads(a) for a in sys.argv[1:])
xs = [-1, 0, 1, 2, 3, 4]
want = [1 - 2 * x + 0.5 * x * x for x in xs]
for r, source in ((first, "executor"), (second, "cache")):
    assert r["status"] == "OK", r
    assert r["source"] == source, r
    (y,) = r["outputs"]
    assert y["name"] == "y" and y["dtype"] == "f32" and y["shape"] == [2, 3], y
    assert all(abs(a - b) < 1e-6 for a, b in zip(y["values"], want)), (y, want)
PY
# A batch of one row with other values: computed, not cached.
out=$(ctl --json infer poly --input "x:f32:1,3:0.5")
"$PYTHON" - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["status"] == "OK" and r["source"] == "executor", r
assert r["outputs"][0]["values"] == [0.125] * 3, r
PY
echo "backend registry OK"

# shoalctl against a live node: models, infer (exit codes), status, bench.
source "$(dirname "$0")/lib.sh"

start_node
ctl() { "$SHOALCTL" --endpoint "$ENDPOINT" "$@"; }

ctl models | grep -q echo
out=$(ctl infer echo)
grep -q "executor" <<<"$out" || { echo "first infer not from executor: $out"; exit 1; }
out=$(ctl infer echo)
grep -q "cache" <<<"$out" || { echo "second infer not from cache: $out"; exit 1; }
# Explicit input: y = 3x + 1 on version 2.
out=$(ctl --json infer echo --input "x:f32:1,256:2")
grep -q '"status": *"OK"' <<<"$out" || { echo "json infer: $out"; exit 1; }
set +e
ctl infer no-such-model >/dev/null 2>&1; rc=$?
set -e
test "$rc" = 1 || { echo "unknown model should exit 1, got $rc"; exit 1; }
ctl status | grep -q script-node
# Every node carries `devices` (empty without a GPU).
out=$(ctl --json status)
"$PYTHON" - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
(node,) = r["nodes"]
assert isinstance(node["devices"], list), node
for d in node["devices"]:
    assert d["name"].startswith("gpu:") and d["total_bytes"] > 0, d
    assert isinstance(d["replicas"], dict), d
PY
json=$(ctl --json bench --model echo --concurrency 8 --duration 2 --warmup 0.5 --hot-ratio 0.9)
echo "$json"
"$PYTHON" - "$json" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["replies"] > 100, r
assert not r["errors"], r
assert 0.5 < r["hit_ratio"] <= 1.0, r
assert r["p50_us"] > 0 and r["p99_us"] >= r["p50_us"], r
PY
echo "shoalctl OK"

# /metrics of a live node, after real traffic, passes `promtool check
# metrics`; /healthz and /readyz answer.
source "$(dirname "$0")/lib.sh"

if ! command -v promtool >/dev/null; then
  echo "SKIP: promtool not installed (Debian package prometheus)"
  exit 77
fi
start_node
# Traffic, so that labelled series and histograms have samples.
"$SHOALCTL" --endpoint "$ENDPOINT" infer echo >/dev/null
"$SHOALCTL" --endpoint "$ENDPOINT" infer echo >/dev/null
"$SHOALCTL" --endpoint "$ENDPOINT" infer no-such-model --input x:f32:1,4:1 >/dev/null 2>&1 || true
"$SHOALCTL" --endpoint "$ENDPOINT" models >/dev/null

metrics=$(curl -sf "http://127.0.0.1:$HTTP_PORT/metrics")
echo "$metrics" | promtool check metrics
for series in 'shoal_requests_total{model="echo",status="OK",source="cache"} 1' \
              'shoal_op_requests_total{op="infer",status="NOT_FOUND"} 1' \
              'shoal_cache_hits_total 1' \
              'shoal_executors{model="echo",node="script-node"} 1' \
              'shoal_cluster_nodes{state="up"} 1'; do
  if ! grep -qxF "$series" <<<"$metrics"; then
    echo "missing sample: $series"
    exit 1
  fi
done
# Admin ops have their own family (shoalctl infer without inputs asks for
# the models first, so there are several).
grep -Eq '^shoal_op_requests_total\{op="models",status="OK"\} [1-9]' <<<"$metrics" ||
  { echo "missing sample: shoal_op_requests_total{op=\"models\",status=\"OK\"}"; exit 1; }
# A client's made-up model name never becomes a label value, and no label
# value is empty.
if grep -q 'no-such-model' <<<"$metrics"; then
  echo "an unknown model name became a label value"
  exit 1
fi
if grep -E '^[a-z_]+\{' <<<"$metrics" | grep -q '=""'; then
  echo "empty label values:"
  grep -E '^[a-z_]+\{' <<<"$metrics" | grep '=""'
  exit 1
fi
for name in shoal_request_duration_seconds_bucket shoal_queue_duration_seconds_bucket \
            shoal_compute_duration_seconds_bucket shoal_batch_size_bucket \
            shoal_requests_waiting shoal_cache_misses_total shoal_cache_evictions_total \
            shoal_cache_bytes shoal_executor_spawns_total \
            shoal_requests_redispatched_total shoal_model_load_duration_seconds_bucket; do
  grep -q "^$name" <<<"$metrics" || { echo "missing metric $name"; exit 1; }
done
# The GPU families exist on every node, GPU or not (with samples only where
# there are GPUs).
for name in shoal_gpu_memory_used_bytes shoal_gpu_memory_total_bytes \
            shoal_gpu_memory_held_bytes shoal_gpu_replicas; do
  grep -qxF "# TYPE $name gauge" <<<"$metrics" || { echo "missing family $name"; exit 1; }
done
test "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/healthz")" = 200
test "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/readyz")" = 200
# /readyz names the node's devices; this test machine may have GPUs or not.
readyz=$(curl -s "http://127.0.0.1:$HTTP_PORT/readyz")
grep -q '^ready: gateway' <<<"$readyz" || { echo "readyz: $readyz"; exit 1; }
grep -Eq '^(no GPU \(.+\)|gpu:[0-9]+ .*: .* used of .*)$' <<<"$readyz" ||
  { echo "readyz lacks devices: $readyz"; exit 1; }
echo "promtool: metrics OK"

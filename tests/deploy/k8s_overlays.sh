# The Kubernetes manifests: every overlay renders with `kubectl kustomize`,
# every rendered object passes check_manifests.py (required fields, what
# refers to what, probes, grace periods, each environment's shape), and the
# configuration each overlay ships passes `shoald --check-config` as the
# head and as a worker. The overlays' secret files are made in a copy of
# deploy/k8s, as an operator would with make-secrets.sh.
source "$(dirname "$0")/../integration/lib.sh"

if ! command -v kubectl >/dev/null; then
  echo "SKIP: kubectl (with kustomize) not installed"
  exit 77
fi
if ! "$PYTHON" -c 'import yaml' 2>/dev/null; then
  echo "SKIP: $PYTHON lacks python3-yaml"
  exit 77
fi
SRC=${SOURCE_ROOT:?}
scratch_dir WORK k8s
cp -r "$SRC/deploy/k8s" "$WORK/k8s"
rm -rf "$WORK"/k8s/overlays/*/secrets

WORKER_PID=""
stop_worker() {
  if [[ -n "$WORKER_PID" ]]; then
    kill -TERM "$WORKER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$WORKER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$WORKER_PID" 2>/dev/null || true
    wait "$WORKER_PID" 2>/dev/null || true
  fi
  WORKER_PID=""
}
trap 'rc=$?; stop_worker; (exit $rc); cleanup' EXIT

# pod_check ENV OVERLAY: the head's and an on-demand worker's configuration
# as their pods have it passes --check-config; then both start on loopback
# ports, the worker joins over the CURVE link with its own key, the admin
# key from make-secrets.sh is served and a client without a key is not.
pod_check() {
  local env=$1 overlay=$2 head=$WORK/$1-head worker=$WORK/$1-worker
  "$PYTHON" "$SRC/tests/deploy/pod_files.py" "$WORK/$env.yaml" shoal-head "$head"
  "$PYTHON" "$SRC/tests/deploy/pod_files.py" "$WORK/$env.yaml" \
    shoal-worker-on-demand "$worker"
  local head_args head_env worker_args worker_env
  mapfile -t head_args <"$head/args"
  mapfile -t head_env <"$head/env"
  mapfile -t worker_args <"$worker/args"
  mapfile -t worker_env <"$worker/env"
  grep -q "^SHOAL_SECURITY_CLIENTS_FILE=" "$head/env" ||
    { echo "$env: the head's client port has no clients file"; exit 1; }
  env "${head_env[@]}" "$SHOALD" "${head_args[@]}" "${local_paths[@]}" --check-config
  env "${worker_env[@]}" "$SHOALD" "${worker_args[@]}" "${local_paths[@]}" --check-config

  local link
  link=$(free_port)
  start_node_with env "${head_env[@]}" "$SHOALD" "${head_args[@]}" "${local_paths[@]}" \
    --set "cluster.listen=tcp://127.0.0.1:$link"
  env "${worker_env[@]}" "$SHOALD" "${worker_args[@]/shoal-head:5556/127.0.0.1:$link}" \
    "${local_paths[@]}" --set "http.listen=127.0.0.1:$(free_port)" \
    >>"$NODE_LOG" 2>&1 &
  WORKER_PID=$!
  local admin=(--server-public-key "$overlay/secrets/client-port.pub"
               --client-key "$overlay/secrets/admin.key")
  local status=""
  for _ in $(seq 1 100); do
    status=$("$SHOALCTL" --endpoint "$ENDPOINT" --timeout-ms 500 "${admin[@]}" status 2>&1) || true
    grep -Eq "^shoal-worker-on-demand +worker +up" <<<"$status" && break
    kill -0 "$WORKER_PID" 2>/dev/null || { echo "$env: the worker exited"; exit 1; }
    sleep 0.1
  done
  grep -Eq "^shoal-worker-on-demand +worker +up" <<<"$status" ||
    { echo "$env: the worker did not join:"; echo "$status"; exit 1; }
  if "$SHOALCTL" --endpoint "$ENDPOINT" --timeout-ms 500 ping >/dev/null 2>&1; then
    echo "$env: a client without a key was served"; exit 1
  fi
  stop_worker
  stop_node
}

# start_node_with COMMAND...: the head on free loopback ports (ENDPOINT);
# ready when the admin key's ping is answered.
start_node_with() {
  local port
  port=$(free_port)
  ENDPOINT="tcp://127.0.0.1:$port"
  "$@" --set "gateway.endpoint=$ENDPOINT" --set "http.listen=127.0.0.1:$(free_port)" \
    >>"$NODE_LOG" 2>&1 &
  NODE_PID=$!
}

for env in dev staging production; do
  overlay=$WORK/k8s/overlays/$env
  "$WORK/k8s/make-secrets.sh" "$overlay" >/dev/null
  kubectl kustomize "$overlay" >"$WORK/$env.yaml"
  "$PYTHON" "$SRC/tests/deploy/check_manifests.py" "$WORK/$env.yaml" "$env"

  # The ConfigMap's files, as the pods mount them, then shoald on them.
  mkdir -p "$WORK/$env-config"
  "$PYTHON" - "$WORK/$env.yaml" "$WORK/$env-config" <<'PY'
import sys, yaml
for obj in yaml.safe_load_all(open(sys.argv[1])):
    if obj and obj["kind"] == "ConfigMap":
        for name, text in obj["data"].items():
            open(f"{sys.argv[2]}/{name}", "w").write(text)
PY
  configs=(--config "$WORK/$env-config/shoal.toml" --config "$WORK/$env-config/env.toml")
  # The repository and the cache live in the cluster; here, the examples.
  local_paths=(--set "models.root=$SRC/examples/models" --set "models.cache_dir=$NODE_CACHE")
  # Layered files: the environment's file wins, and --print-config says so.
  printed=$("$SHOALD" "${configs[@]}" "${local_paths[@]}" --print-config)
  grep -q "^max_bytes = .*# from $WORK/$env-config/env.toml$" <<<"$printed" || {
    echo "$env: cache.max_bytes does not come from env.toml:"
    grep "^max_bytes" <<<"$printed"
    exit 1
  }
  grep -q "^drain_grace_ms = 40000  # from $WORK/$env-config/shoal.toml$" <<<"$printed" || {
    echo "$env: runtime.drain_grace_ms does not come from shoal.toml"
    exit 1
  }

  # The pods as they start: their files from the rendered Secrets and
  # ConfigMaps (install-secrets run on them), their args and environment.
  pod_check "$env" "$overlay"
done
echo "k8s overlays: dev, staging and production render, check, configure and join"

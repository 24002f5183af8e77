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
  "$SHOALD" "${configs[@]}" --role head "${local_paths[@]}" --check-config
  "$SHOALD" "${configs[@]}" --role worker --join tcp://shoal-head:5556 \
    "${local_paths[@]}" --check-config
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
done
echo "k8s overlays: dev, staging and production render, check and configure"

# The container image, checked without building it (a build takes many
# minutes): check_dockerfile.py reads deploy/docker/Dockerfile (slim Debian
# runtime stage, no -dev package, non-root user matching the pods,
# shoald as entrypoint, ports and cache volume matching the manifests) and
# checks that its runtime packages cover every library ldd reports for
# shoald, shoalctl and, where built, the CUDA plugin. Then scripts/image.sh
# on a machine without any container tool must say so and fail cleanly.
source "$(dirname "$0")/../integration/lib.sh"

SRC=${SOURCE_ROOT:?}
if ! "$PYTHON" -c 'import yaml' 2>/dev/null; then
  echo "SKIP: $PYTHON lacks python3-yaml"
  exit 77
fi
binaries=("$SHOALD" "$SHOALCTL")
plugin=$(dirname "$SHOALD")/gpu/cuda/libshoal_cuda.so
[[ -f $plugin ]] && binaries+=("$plugin")
rc=0
"$PYTHON" "$SRC/tests/deploy/check_dockerfile.py" "$SRC" "${binaries[@]}" || rc=$?
[[ $rc -eq 0 ]] || exit "$rc"

# image.sh with no docker, podman or buildah on PATH: a clear error, exit 1.
scratch_dir WORK image
mkdir -p "$WORK/bin"
for t in dirname sed tail git mktemp; do
  ln -s "$(command -v "$t")" "$WORK/bin/$t"
done
set +e
out=$(PATH=$WORK/bin "$(command -v bash)" "$SRC/scripts/image.sh" 2>&1)
status=$?
set -e
if [[ $status -ne 1 || $out != *"no container tool works here"* || $out != *"podman: not installed"* ]]; then
  echo "FAIL: image.sh without a container tool: exit $status:"
  echo "$out"
  exit 1
fi
echo "image.sh without a container tool: $(head -1 <<<"$out")"
echo "docker image: Dockerfile checks out"

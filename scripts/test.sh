#!/usr/bin/env bash
# Runs shoal's tests: installs what is missing (scripts/setup.sh, a fast
# no-op when everything is there), configures build/ when it is not yet,
# builds everything, and runs every suite except the benchmarks:
# unit, integration, chaos, fuzz, gpu (skipped without a GPU) and deploy
# (Kubernetes overlays and a real Prometheus).
#
#   scripts/test.sh                      everything but benchmarks
#   scripts/test.sh --suite unit         only the named suite(s)
#   scripts/test.sh --list               list the tests, run nothing
#   scripts/test.sh serving -v           any `meson test` arguments
#
# Extra arguments go to `meson test` as they are; when they name a
# `--suite`, that choice replaces the default suites. The exit status is
# meson's. BUILD_DIR picks another build directory (default: build).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
BUILD_DIR=${BUILD_DIR:-build}
SUITES=(unit integration chaos fuzz gpu deploy)
start=$SECONDS

scripts/setup.sh

# The cuda feature (auto) builds gpu/cuda where nvcc is found; CUDA's
# installer does not put it on PATH.
if [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi

if [[ ! -f $BUILD_DIR/meson-private/coredata.dat ]]; then
  echo "test: configuring $BUILD_DIR"
  meson setup "$BUILD_DIR" --buildtype=release
fi

echo "test: building $BUILD_DIR"
ninja -C "$BUILD_DIR"

suite_args=()
user_picks_suites=false
for a in "$@"; do
  case "$a" in
    --suite | --suite=*) user_picks_suites=true ;;
  esac
done
if ! $user_picks_suites; then
  for s in "${SUITES[@]}"; do
    suite_args+=(--suite "$s")
  done
fi

rc=0
meson test -C "$BUILD_DIR" --print-errorlogs --num-processes 2 \
  "${suite_args[@]}" "$@" || rc=$?

# The plain closing line CI reads: counts from meson's own test log.
log_json=$BUILD_DIR/meson-logs/testlog.json
if [[ -f $log_json ]]; then
  python3 - "$log_json" <<'PY' || true
import json, sys
passed = failed = skipped = 0
for line in open(sys.argv[1]):
    line = line.strip()
    if not line:
        continue
    result = json.loads(line).get("result", "")
    if result in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif result == "SKIP":
        skipped += 1
    else:
        failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
PY
fi

elapsed=$((SECONDS - start))
if ((rc == 0)); then
  echo "test.sh: PASS (meson test exit 0, ${elapsed}s)"
else
  echo "test.sh: FAIL (meson test exit $rc, ${elapsed}s; logs in $BUILD_DIR/meson-logs/testlog.txt)"
fi
exit "$rc"

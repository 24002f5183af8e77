#!/usr/bin/env bash
# Builds the example model repository that a plain `shoald` serves: the
# synthetic models of examples/models (echo, slow, flaky) and the real ones
# that scripts/make_models.py generates (the MLP and the CNN, with their
# weights and reference outputs). The build runs it into
# build/examples/models, so generated files never land in the source tree.
# With --torch it adds the TorchScript examples (resnet18, text), which
# need python3-torch and python3-torchvision.
#
#   scripts/example_models.sh OUT_DIR [STAMP_FILE] [--torch]
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:?usage: example_models.sh OUT_DIR [STAMP_FILE]}
stamp=${2:-}
torch_flag=()
if [[ ${3:-} == --torch ]]; then
  torch_flag=(--torch)
fi

# Written beside the final place, then swapped in, so that a node reading
# the repository never sees it half made.
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
cp -r "$src/examples/models/." "$tmp/"
/usr/bin/python3 "$src/scripts/make_models.py" --out "$tmp" "${torch_flag[@]}" >/dev/null
rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
if [[ -n $stamp ]]; then
  touch "$stamp"
fi

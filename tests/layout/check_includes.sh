#!/usr/bin/env bash
# The folders' arrows run one way (docs/architecture.md, "The folders"):
#   runtime -> actors -> gpu -> config -> net
# A file may include its own folder and the folders after it in that chain,
# never one before it, so that no two folders include each other and
# nothing in net/ or config/ reaches actors/ or runtime/. Prints every
# include that breaks the rule and fails.
set -euo pipefail
cd "${SOURCE_ROOT:-$(dirname "$0")/../..}"

rank() {
  case "$1" in
    net) echo 0 ;;
    config) echo 1 ;;
    gpu) echo 2 ;;
    actors) echo 3 ;;
    runtime) echo 4 ;;
    *) echo -1 ;;
  esac
}

bad=0
checked=0
while IFS= read -r file; do
  from=${file%%/*}
  from_rank=$(rank "$from")
  while IFS= read -r target; do
    to=${target%%/*}
    to_rank=$(rank "$to")
    ((to_rank < 0)) && continue
    checked=$((checked + 1))
    if ((to_rank > from_rank)); then
      echo "$file includes $target: $from/ may not use $to/"
      bad=$((bad + 1))
    fi
  done < <(grep -oP '^\s*#\s*include\s*"\K[^"]+' "$file" || true)
done < <(find net config gpu actors runtime -type f \
           \( -name '*.hpp' -o -name '*.cpp' -o -name '*.cu' -o -name '*.h' \) | sort)

if ((bad > 0)); then
  echo "layout: $bad include(s) against the folder arrows"
  exit 1
fi
echo "layout: $checked includes between project folders, all one way"

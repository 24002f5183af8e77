#!/usr/bin/env bash
# Installs the Debian 12 (bookworm) packages that shoal builds, tests and
# runs with. Idempotent and non-interactive: when every package is already
# installed it does nothing (no `apt-get update`) and returns at once.
#
#   scripts/setup.sh            install what is missing
#   scripts/setup.sh --check    only report what is missing (exit 1 if any)
#
# Runs apt-get as root, through sudo when not root. Package services are not
# started during the install (a policy-rc.d denies them while apt runs); the
# `prometheus` package is here only for `promtool`, and even if its server
# does run it listens on :9090, not on shoal's :5555 or :9310.
set -euo pipefail

PACKAGES=(
  # build
  meson ninja-build pkg-config g++
  # libraries
  libcaf-dev libzmq3-dev cppzmq-dev libmsgpack-cxx-dev
  libmicrohttpd-dev # /metrics: event-driven, so idle connections cost no thread
  libtomlplusplus-dev libspdlog-dev libcli11-dev libsodium-dev
  libcurl4-openssl-dev libssl-dev libxxhash-dev libopenblas-dev
  # the torch backend's plugin (libtorch 1.13, CPU), and what writes its
  # example models and reference outputs; installed without recommends,
  # like everything here
  libtorch-dev python3-torch python3-torchvision
  libsqlite3-dev # the durable job store on the head
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-zmq python3-msgpack python3-numpy
  python3-yaml # the deploy tests read rendered Kubernetes manifests
  prometheus # promtool, and the server the deploy tests alert with
  curl clang-format-16 # the format check (InsertBraces needs 15+)
)

check_only=false
case "${1:-}" in
  --check) check_only=true ;;
  "") ;;
  -h | --help)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "setup.sh: unknown argument '$1' (try --help)" >&2
    exit 2
    ;;
esac

# One dpkg-query for all of them; packages it does not know are missing.
declare -A installed=()
while IFS=$'\t' read -r name status; do
  [[ $status == "install ok installed" ]] && installed[$name]=1
done < <(dpkg-query -W -f='${Package}\t${Status}\n' "${PACKAGES[@]}" \
  2>/dev/null || true)

missing=()
for p in "${PACKAGES[@]}"; do
  [[ -n ${installed[$p]:-} ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#PACKAGES[@]} packages are installed"
  exit 0
fi
echo "setup: missing ${#missing[@]} package(s): ${missing[*]}"
if $check_only; then
  exit 1
fi

SUDO=()
if ((EUID != 0)); then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "setup: not root and sudo is not installed; run as root:" >&2
    echo "  apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  SUDO=(sudo -n)
  if ! sudo -n true 2>/dev/null; then
    # Needs a password: ask once, on the terminal, rather than hang later.
    SUDO=(sudo)
  fi
fi

# Keep package maintainer scripts from starting services (prometheus would)
# while apt runs, unless the system already has a policy of its own.
POLICY=/usr/sbin/policy-rc.d
made_policy=false
cleanup() {
  if $made_policy; then
    "${SUDO[@]}" rm -f "$POLICY" || true
  fi
}
trap cleanup EXIT
if [[ ! -e $POLICY ]]; then
  printf '#!/bin/sh\n# shoal scripts/setup.sh: no service starts during install\nexit 101\n' |
    "${SUDO[@]}" tee "$POLICY" >/dev/null
  "${SUDO[@]}" chmod 755 "$POLICY"
  made_policy=true
fi

APT_OPTS=(
  -y -q --no-install-recommends
  -o DPkg::Lock::Timeout=300
  -o Dpkg::Options::=--force-confdef
  -o Dpkg::Options::=--force-confold
)
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get -q -o DPkg::Lock::Timeout=300 update </dev/null
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get "${APT_OPTS[@]}" install "${missing[@]}" </dev/null

echo "setup: installed ${missing[*]}"

#!/usr/bin/env bash
# Builds shoal's container images from deploy/docker/Dockerfile with docker,
# podman or buildah (the first that works, or --tool).
#
#   scripts/image.sh [options]
#
#   --gpu                  the GPU variant: adds the CUDA plugin and the CUDA
#                          runtime, cuBLAS and cuDNN libraries, taken from
#                          --cuda DIR (default /usr/local/cuda)
#   --tag NAME             image name (default shoal:latest, shoal:latest-gpu)
#   --base IMAGE           the Debian 12 image both stages start from
#                          (default docker.io/library/debian:12-slim)
#   --base-from-debootstrap
#                          make that base locally with debootstrap from the
#                          Debian archive (no registry needed) and use it;
#                          the root file system is cached in
#                          ${XDG_CACHE_HOME:-~/.cache}/shoal/image-base
#   --mirror URL           Debian mirror for debootstrap
#                          (default http://deb.debian.org/debian)
#   --from-build DIR       take shoald, shoalctl (and the plugin) from a
#                          Debian 12 build tree instead of compiling them in
#                          the build stage (faster; the binaries must come
#                          from Debian 12, like the image)
#   --ccache DIR           reuse a ccache directory in the build stage
#                          (podman and buildah only; default $CCACHE_DIR)
#   --tool docker|podman|buildah
#   --isolation chroot     podman/buildah: run the build's RUN steps with
#                          chroot instead of an OCI runtime (for sandboxes
#                          where crun/runc cannot make cgroups, e.g. "cgroups
#                          in hybrid mode not supported")
#   --save FILE            also write the image as an OCI archive
#
# Extra arguments for the tool's build command go after `--`. In a sandbox
# without overlay mounts, podman and buildah also need STORAGE_DRIVER=vfs.
# Model weights are never put into an image: nodes fetch them through the
# model store (models.root) into /var/cache/shoal/models.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
gpu=false
tag=""
base=docker.io/library/debian:12-slim
debootstrap_base=false
mirror=http://deb.debian.org/debian
from_build=""
ccache_dir=${CCACHE_DIR:-}
tool=""
isolation=""
save=""
cuda_root=/usr/local/cuda
extra=()

die() {
  echo "image.sh: $*" >&2
  exit 1
}

while (($#)); do
  case "$1" in
    --gpu) gpu=true ;;
    --tag) tag=${2:?--tag needs a name}; shift ;;
    --base) base=${2:?--base needs an image}; shift ;;
    --base-from-debootstrap) debootstrap_base=true ;;
    --mirror) mirror=${2:?--mirror needs a URL}; shift ;;
    --from-build) from_build=${2:?--from-build needs a build directory}; shift ;;
    --ccache) ccache_dir=${2:?--ccache needs a directory}; shift ;;
    --cuda) cuda_root=${2:?--cuda needs a directory}; shift ;;
    --tool) tool=${2:?--tool needs docker, podman or buildah}; shift ;;
    --isolation) isolation=${2:?--isolation needs chroot, oci or rootless}; shift ;;
    --save) save=${2:?--save needs a file}; shift ;;
    --) shift; extra=("$@"); break ;;
    -h | --help) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
  shift
done
[[ -n $tag ]] || tag=$($gpu && echo shoal:latest-gpu || echo shoal:latest)

# -- the tool ----------------------------------------------------------------
# A tool counts only when it can reach its engine: `docker` without a
# daemon is not a way to build.
tool_works() {
  case "$1" in
    docker) command -v docker >/dev/null && docker info >/dev/null 2>&1 ;;
    podman) command -v podman >/dev/null && podman info >/dev/null 2>&1 ;;
    buildah) command -v buildah >/dev/null && buildah info >/dev/null 2>&1 ;;
    *) return 1 ;;
  esac
}
why_not() {
  if ! command -v "$1" >/dev/null; then
    echo "  $1: not installed"
  else
    echo "  $1: '$1 info' fails: $("$1" info 2>&1 | tail -1)"
  fi
}
if [[ -n $tool ]]; then
  tool_works "$tool" || die "$tool cannot build here:
$(why_not "$tool")"
else
  for t in docker podman buildah; do
    if tool_works "$t"; then
      tool=$t
      break
    fi
  done
  [[ -n $tool ]] || die "no container tool works here; install one of them (Debian: apt-get install podman):
$(why_not docker)
$(why_not podman)
$(why_not buildah)"
fi
echo "image.sh: building $tag with $tool"

# -- the base image, made with debootstrap -----------------------------------
image_exists() {
  case "$tool" in
    docker) docker image inspect "$1" >/dev/null 2>&1 ;;
    podman) podman image exists "$1" ;;
    buildah) buildah inspect --type image "$1" >/dev/null 2>&1 ;;
  esac
}

# A minimal Debian 12 like debian:12-slim: minbase, no documentation,
# manual pages or locales (also not for packages installed later), no
# recommended packages, the security archive in its sources.
make_debootstrap_base() {
  local cache=${XDG_CACHE_HOME:-$HOME/.cache}/shoal/image-base
  local tarball=$cache/bookworm-minbase.tar fresh=false
  if [[ ! -f $tarball ]]; then
    fresh=true
    command -v debootstrap >/dev/null ||
      die "--base-from-debootstrap needs debootstrap (apt-get install debootstrap)"
    ((EUID == 0)) || die "debootstrap needs root (run image.sh as root, or give --base)"
    mkdir -p "$cache"
    local root=$cache/rootfs
    # A finished debootstrap (it removes its /debootstrap when done) from an
    # earlier run that stopped later on is reused.
    if [[ ! -f $root/etc/debian_version || -d $root/debootstrap ]]; then
      rm -rf "$root"
      echo "image.sh: debootstrap bookworm from $mirror (minutes, once)"
      debootstrap --variant=minbase bookworm "$root" "$mirror"
    fi
    cat >"$root/etc/dpkg/dpkg.cfg.d/01-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
      >"$root/etc/apt/apt.conf.d/01-slim"
    local security=${mirror%/debian}/debian-security
    cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
    # debootstrap installs the release as it was published; the security
    # updates since (which debian:12-slim has) come from the archives just
    # listed. The base is cached: remove the tarball to take newer ones.
    chroot "$root" apt-get update -q
    DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get upgrade -y -q
    find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
    rm -rf "$root"/usr/share/{man,info}/* "$root"/var/lib/apt/lists/* \
      "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
      "$root"/var/log/* "$root"/tmp/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias \
      -exec rm -rf {} + 2>/dev/null || true
    tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  local name=localhost/shoal-base:bookworm
  # A new tarball replaces the image made from an older one.
  if $fresh || ! image_exists "$name"; then
    echo "image.sh: importing $tarball as $name"
    case "$tool" in
      docker) docker import --change 'CMD ["/bin/bash"]' "$tarball" "$name" >/dev/null ;;
      podman) podman import --change 'CMD ["/bin/bash"]' "$tarball" "$name" >/dev/null ;;
      buildah)
        local c
        c=$(buildah from scratch)
        buildah add "$c" "$tarball" / >/dev/null
        buildah config --cmd /bin/bash "$c"
        buildah commit --rm "$c" "$name" >/dev/null
        ;;
    esac
  fi
  base=$name
}
if $debootstrap_base; then
  make_debootstrap_base
fi

# -- the build context ---------------------------------------------------------
ctx=$(mktemp -d "${TMPDIR:-/tmp}/shoal-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/src" "$ctx/cuda" "$ctx/prebuilt"
# The sources as git sees them (untracked files too, ignored ones not), so
# build trees, caches and overlay secrets never enter an image.
(cd "$SRC" && git ls-files -z --cached --others --exclude-standard |
  tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -C "$ctx/src" -xf -

if $gpu; then
  [[ -d $cuda_root/lib64 || -d $cuda_root/lib ]] ||
    die "--gpu needs the CUDA libraries in $cuda_root (--cuda DIR)"
  lib=$cuda_root/lib64
  [[ -d $lib ]] || lib=$cuda_root/lib
  mkdir -p "$ctx/cuda/lib64"
  # The runtime libraries the image keeps (deploy/docker/cuda-runtime-libs.txt).
  while read -r pattern _; do
    [[ -z $pattern || $pattern == \#* ]] && continue
    compgen -G "$lib/$pattern" >/dev/null || die "$lib has no $pattern"
    cp -a "$lib"/$pattern "$ctx/cuda/lib64/"
  done <"$SRC/deploy/docker/cuda-runtime-libs.txt"
  if [[ -z $from_build ]]; then
    # Compiling the plugin needs nvcc, the headers and the libraries to
    # link with; the build stage has them, the runtime stage never does.
    [[ -x $cuda_root/bin/nvcc ]] || die "no $cuda_root/bin/nvcc to build the plugin with (or use --from-build)"
    cp -a "$cuda_root/bin" "$cuda_root/include" "$ctx/cuda/"
    [[ -d $cuda_root/nvvm ]] && cp -a "$cuda_root/nvvm" "$ctx/cuda/"
    cp -a "$lib"/libcudadevrt.a "$lib"/libcudart_static.a "$lib"/stubs "$ctx/cuda/lib64/" 2>/dev/null || true
    for l in libcudart.so libcublas.so libcublasLt.so libcudnn.so; do
      cp -a "$lib/$l" "$ctx/cuda/lib64/"
    done
  fi
fi

if [[ -n $from_build ]]; then
  [[ -x $from_build/shoald && -x $from_build/shoalctl ]] ||
    die "$from_build has no shoald and shoalctl (ninja -C $from_build node)"
  grep -q 'VERSION_CODENAME=bookworm' /etc/os-release ||
    die "--from-build needs binaries built on Debian 12, like the image"
  mkdir -p "$ctx/prebuilt/bin"
  install -s -m 755 "$from_build/shoald" "$from_build/shoalctl" "$ctx/prebuilt/bin/"
  if $gpu; then
    plugin=$from_build/gpu/cuda/libshoal_cuda.so
    [[ -f $plugin ]] || die "$from_build has no CUDA plugin (configure it with the cuda feature)"
    mkdir -p "$ctx/prebuilt/lib/shoal"
    install -s -m 644 "$plugin" "$ctx/prebuilt/lib/shoal/"
  fi
fi

# -- build ---------------------------------------------------------------------
args=(--build-arg "BASE=$base" -f "$ctx/src/deploy/docker/Dockerfile" -t "$tag")
if [[ $tool != docker && -n $ccache_dir && -d $ccache_dir ]]; then
  args+=(-v "$ccache_dir:/ccache")
fi
if [[ $tool != docker && -n $isolation ]]; then
  args+=(--isolation "$isolation")
fi
if [[ -n $from_build ]]; then
  # Nothing to compile: the build stage only gathers the files.
  args+=(--build-arg BUILD_PACKAGES=)
fi
case "$tool" in
  # The build stage installs its packages from the Debian archive: the
  # host's network, since a sandbox may have no container network.
  docker) docker build --network host "${args[@]}" "${extra[@]}" "$ctx" ;;
  podman) podman build --network host "${args[@]}" "${extra[@]}" "$ctx" ;;
  buildah) buildah bud --network host "${args[@]}" "${extra[@]}" "$ctx" ;;
esac

size=$(case "$tool" in
  docker) docker image inspect -f '{{.Size}}' "$tag" ;;
  podman) podman image inspect -f '{{.Size}}' "$tag" ;;
  buildah) buildah inspect -t image -f '{{.Size}}' "$tag" 2>/dev/null || echo "?" ;;
esac)
echo "image.sh: built $tag ($size bytes uncompressed)"
if [[ -n $save ]]; then
  case "$tool" in
    docker) docker save -o "$save" "$tag" ;;
    podman) podman save --format oci-archive -o "$save" "$tag" ;;
    buildah) buildah push "$tag" "oci-archive:$save" ;;
  esac
  echo "image.sh: wrote $save"
fi

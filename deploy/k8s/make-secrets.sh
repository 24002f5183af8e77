#!/usr/bin/env bash
# Writes the secret files an overlay's secretGenerator reads, into
# OVERLAY/secrets/ (ignored by git: secrets are never committed). Run it
# once per environment; in production, keep the result in Sealed Secrets or
# an external secret store instead (docs/operations.md).
#
#   deploy/k8s/make-secrets.sh deploy/k8s/overlays/dev
#
# Existing files are kept, so re-running never rotates a key by accident;
# delete a file to make a new one.
set -euo pipefail
overlay=${1:?usage: make-secrets.sh OVERLAY_DIR}
dir=$overlay/secrets
mkdir -p "$dir"
chmod 700 "$dir"
umask 077

# The shared secret that signs node-link frames.
if [[ ! -f $dir/cluster.secret ]]; then
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/cluster.secret"
  echo >>"$dir/cluster.secret"
  echo "wrote $dir/cluster.secret"
fi

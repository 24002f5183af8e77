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

# CURVE key pairs (Z85; the secret key on the first line of NAME.key, the
# public one in NAME.pub), from `shoalctl keygen` when this shoalctl has it,
# else from pyzmq (the same libzmq call).
SHOALCTL=${SHOALCTL:-shoalctl}
keypair() {
  local prefix=$dir/$1
  [[ -f $prefix.key ]] && return 0
  if "$SHOALCTL" keygen "$prefix" >/dev/null 2>&1 && [[ -f $prefix.key ]]; then
    :
  elif /usr/bin/python3 -c 'import zmq' 2>/dev/null; then
    /usr/bin/python3 - "$prefix" <<'PY'
import os, sys, zmq
public, secret = zmq.curve_keypair()
fd = os.open(sys.argv[1] + ".key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, secret + b"\n")
os.close(fd)
open(sys.argv[1] + ".pub", "wb").write(public + b"\n")
PY
  else
    echo "make-secrets.sh: need 'shoalctl keygen' or python3-zmq to make CURVE keys" >&2
    exit 1
  fi
  chmod 600 "$prefix.key"
  echo "wrote $prefix.key and $prefix.pub"
}
# The head's client port (security.curve_secret_key_file); clients are
# given client-port.pub.
keypair client-port
# An operator's admin client key: admin.key stays with the operator (it is
# not put into the cluster); admin.pub goes into clients.toml.
keypair admin
# The node links (cluster.curve_secret_key_file): the head's pair, and one
# pair shared by the workers of this environment.
keypair head-link
keypair worker-link

# Who may connect: public keys only, so these two may also be kept in git.
# shoald wants them readable by its user alone, like the key files.
# They are mounted from a ConfigMap without a hash suffix, so an edit
# reaches running heads without a restart (security.clients_file is re-read
# when it changes).
if [[ ! -f $dir/clients.toml ]]; then
  cat >"$dir/clients.toml" <<TOML
# security.clients_file: the clients the head's client port accepts.
[[client]]
name = "admin"
public_key = "$(head -1 "$dir/admin.pub")"
tenant = "default"
role = "admin"
TOML
  echo "wrote $dir/clients.toml"
fi
if [[ ! -f $dir/workers.keys ]]; then
  cat >"$dir/workers.keys" <<KEYS
# cluster.workers_file: the worker link keys the head accepts, one Z85
# public key a line.
$(head -1 "$dir/worker-link.pub")
KEYS
  echo "wrote $dir/workers.keys"
fi

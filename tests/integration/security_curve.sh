# CURVE on the client port, against a live node: unknown keys and plain
# clients get no session (and are counted), listed clients are served, a
# client key's admin ops are PERMISSION_DENIED, a key's tenant (not the
# request's) decides its limits, a key removed from the
# clients file (no restart) is refused within 2 s, the Python example
# client connects with CURVE, and an admin key's drain stops the node.
source "$(dirname "$0")/lib.sh"
require_python_modules

scratch_dir KEYS security-keys
umask 077
for k in server alice root mallory; do
  "$SHOALCTL" keygen "$KEYS/$k" >/dev/null
done
[[ $(stat -c %a "$KEYS/alice.key") == 600 ]] || { echo "keygen: .key is not 0600"; exit 1; }
write_clients() { # write_clients [alice]: the clients file, atomically
  {
    if [[ "${1:-}" == alice ]]; then
      printf '[[client]]\nname = "alice"\npublic_key = "%s"\ntenant = "team-a"\nrole = "client"\n\n' "$(cat "$KEYS/alice.pub")"
    fi
    printf '[[client]]\nname = "root"\npublic_key = "%s"\ntenant = "ops"\nrole = "admin"\n' "$(cat "$KEYS/root.pub")"
  } >"$KEYS/clients.tmp"
  mv "$KEYS/clients.tmp" "$KEYS/clients.toml"
}
write_clients alice

# A world-readable key file is refused, naming the file.
chmod 644 "$KEYS/server.key"
if "$SHOALD" --set "security.curve_secret_key_file=$KEYS/server.key" \
    --set "security.clients_file=$KEYS/clients.toml" --set http.listen= \
    --set gateway.endpoint=tcp://127.0.0.1:0 >"$KEYS/refused.log" 2>&1; then
  echo "a node started with a world-readable key file"; exit 1
fi
grep -q "server.key" "$KEYS/refused.log" || { cat "$KEYS/refused.log"; exit 1; }
chmod 600 "$KEYS/server.key"

# alice's key names tenant team-a, which may use echo only.
printf '[tenants.team-a]\nmodels = ["echo"]\n' >"$KEYS/tenants.toml"

# start_node's ping (and every shoalctl below) uses alice's key.
export SHOAL_SERVER_PUBLIC_KEY="$KEYS/server.pub" SHOAL_CLIENT_KEY="$KEYS/alice.key"
start_node --set "security.curve_secret_key_file=$KEYS/server.key" \
  --set "security.clients_file=$KEYS/clients.toml" --config "$KEYS/tenants.toml"
if grep -qF -e "$(head -c 40 "$KEYS/server.key")" "$NODE_LOG"; then
  echo "the secret key reached the log"; exit 1
fi
"$SHOALCTL" --endpoint "$ENDPOINT" infer echo >/dev/null

# The key's tenant holds whatever tenant the request names: alice is
# team-a, so slow is refused even when she says she is ops.
if "$SHOALCTL" --endpoint "$ENDPOINT" infer slow --tenant ops >"$KEYS/out" 2>&1; then
  echo "team-a was served a model outside its list"; exit 1
fi
grep -q "PERMISSION_DENIED" "$KEYS/out" && grep -q "tenant 'team-a'" "$KEYS/out" ||
  { cat "$KEYS/out"; exit 1; }

# No key, and a key not in the list: no reply at all; both counted.
cat >"$KEYS/probe.py" <<'PY'
import sys, zmq, msgpack
endpoint, keys = sys.argv[1], sys.argv[2]
def ask(curve_key):
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if curve_key:
        secret = open(f"{keys}/{curve_key}.key").readline().strip().encode()
        s.curve_serverkey = open(f"{keys}/server.pub").readline().strip().encode()
        s.curve_secretkey = secret
        s.curve_publickey = zmq.curve_public(secret)
    s.connect(endpoint)
    s.send(msgpack.packb({"v": 1, "id": 1, "op": "ping"}))
    got = s.poll(1500, zmq.POLLIN)
    s.close()
    return got
assert not ask(None), "a client without CURVE got a reply"
assert not ask("mallory"), "a key not in the clients file got a reply"
assert ask("alice"), "alice got no reply"
PY
# Without MALLOC_PERTURB_ (which meson sets): under it, this machine's
# pyzmq hangs in a refused handshake of its own; the node is not affected.
env -u MALLOC_PERTURB_ timeout 60 "$PYTHON" "$KEYS/probe.py" "$ENDPOINT" "$KEYS"
metrics=$(curl -sf "http://127.0.0.1:$HTTP_PORT/metrics")
# The plain client is no_curve when libzmq reads its greeting; a loaded
# machine sometimes reports its handshake without that detail
# (bad_handshake). Either way it must be counted.
count_of() {
  awk -v k="shoal_auth_failures_total{reason=\"$1\"}" '$1 == k { print $2 }' <<<"$metrics"
}
(( $(count_of unknown_key) >= 1 )) ||
  { echo "not counted: the unknown key"; grep auth_failures <<<"$metrics"; exit 1; }
(( $(count_of no_curve) + $(count_of bad_handshake) >= 1 )) ||
  { echo "not counted: the plain client"; grep auth_failures <<<"$metrics"; exit 1; }

# A client key may not run admin ops; the node keeps serving.
for op in "drain script-node" "load echo" "unload echo"; do
  # shellcheck disable=SC2086
  if "$SHOALCTL" --endpoint "$ENDPOINT" $op >"$KEYS/out" 2>&1; then
    echo "alice's $op was accepted"; exit 1
  fi
  grep -q PERMISSION_DENIED "$KEYS/out" || { cat "$KEYS/out"; exit 1; }
done
"$SHOALCTL" --endpoint "$ENDPOINT" ping >/dev/null

# The Python example client with CURVE.
"$PYTHON" "$SOURCE_ROOT/examples/python/client.py" --endpoint "$ENDPOINT" \
  --model echo --server-public-key "$KEYS/server.pub" --client-key "$KEYS/alice.key"

# A bad clients file keeps the previous list.
echo 'this is [not toml' >"$KEYS/clients.tmp" && mv "$KEYS/clients.tmp" "$KEYS/clients.toml"
sleep 1
grep -q "keeping the previous 2 client(s)" "$NODE_LOG" || { echo "bad file not reported"; exit 1; }
"$SHOALCTL" --endpoint "$ENDPOINT" ping >/dev/null

# Revocation without a restart: alice's new connections are refused within
# 2 s of the file changing.
write_clients
start=$(date +%s%N)
refused=""
while (( ($(date +%s%N) - start) / 1000000 < 4000 )); do
  if ! "$SHOALCTL" --endpoint "$ENDPOINT" --timeout-ms 300 ping >/dev/null 2>&1; then
    refused=$(( ($(date +%s%N) - start) / 1000000 ))
    break
  fi
done
[[ -n "$refused" ]] || { echo "alice was still served 4 s after removal"; exit 1; }
echo "alice refused ${refused} ms after her key was removed"
(( refused < 2000 )) || { echo "revocation took ${refused} ms (over 2 s)"; exit 1; }

# SIGHUP re-reads the file (and does not stop the node).
kill -HUP "$NODE_PID"
sleep 0.5
kill -0 "$NODE_PID" || { echo "SIGHUP stopped the node"; exit 1; }

# An admin key's drain works: the node stops.
SHOAL_CLIENT_KEY="$KEYS/root.key" "$SHOALCTL" --endpoint "$ENDPOINT" drain script-node
for _ in $(seq 1 100); do
  kill -0 "$NODE_PID" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$NODE_PID" 2>/dev/null; then
  echo "the admin's drain did not stop the node"; exit 1
fi
NODE_PID=""
echo "security_curve OK"

# Without CURVE, admin ops are accepted only from this machine: a client
# reaching the gateway through a non-loopback address gets
# PERMISSION_DENIED, a loopback one is served; security.admin_from = "any"
# opens them (with a warning at start).
source "$(dirname "$0")/lib.sh"

# The first non-loopback IPv4 address of this machine, if any.
ADDR=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9.]+$' | grep -v '^127\.' | head -1 || true)
if [[ -z "$ADDR" ]]; then
  echo "SKIP: no non-loopback IPv4 address to reach the gateway through"
  exit 77
fi
GATEWAY_BIND=0.0.0.0
start_node
REMOTE="tcp://$ADDR:$PORT"
if "$SHOALCTL" --endpoint "$REMOTE" unload echo >"$NODE_CACHE/out" 2>&1; then
  echo "a non-loopback unload was accepted"; exit 1
fi
grep -q PERMISSION_DENIED "$NODE_CACHE/out" || { cat "$NODE_CACHE/out"; exit 1; }
"$SHOALCTL" --endpoint "$REMOTE" ping >/dev/null
"$SHOALCTL" --endpoint "$REMOTE" infer echo >/dev/null
"$SHOALCTL" --endpoint "$ENDPOINT" load echo >/dev/null
stop_node

start_node --set security.admin_from=any
grep -q 'admin_from = "any"' "$NODE_LOG" || { echo "no warning for admin_from = any"; exit 1; }
"$SHOALCTL" --endpoint "tcp://$ADDR:$PORT" load echo >/dev/null
echo "security_admin OK"

# The Python example client (Debian python3-zmq, python3-msgpack) against a
# live node: it lists models, infers, and sees its repeat served from cache.
source "$(dirname "$0")/lib.sh"

if ! "$PYTHON" -c 'import zmq, msgpack' 2>/dev/null; then
  echo "SKIP: $PYTHON lacks python3-zmq or python3-msgpack"
  exit 77
fi
start_node
"$PYTHON" "${SOURCE_ROOT:-.}/examples/python/client.py" --endpoint "$ENDPOINT" --model echo
echo "python client OK"

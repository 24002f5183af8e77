# The Python example client (Debian python3-zmq, python3-msgpack) against a
# live node: it lists models, infers, sees its repeat served from cache, and
# runs a durable job (submit, wait) whose id is its idempotency key.
source "$(dirname "$0")/lib.sh"

if ! "$PYTHON" -c 'import zmq, msgpack' 2>/dev/null; then
  echo "SKIP: $PYTHON lacks python3-zmq or python3-msgpack"
  exit 77
fi
start_node
"$PYTHON" "${SOURCE_ROOT:-.}/examples/python/client.py" --endpoint "$ENDPOINT" --model echo

# A durable job: submitted, waited for, done; the same id again is the same
# job, already done.
for round in first again; do
  out=$("$PYTHON" "${SOURCE_ROOT:-.}/examples/python/client.py" --endpoint "$ENDPOINT" \
    --model echo --job example-job)
  echo "$out"
  grep -q "^job example-job done" <<<"$out" || { echo "$round: the job did not end done"; exit 1; }
done
grep -q "^submit example-job: OK done" <<<"$out" ||
  { echo "a second submit of the same id made a new job"; exit 1; }
echo "python client OK"

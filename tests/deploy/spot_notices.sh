# Spot notices: a worker whose node.preemption_notice_file appears, and one
# whose node.preemption_notice_url starts answering 200, each drain at once
# (their replicas replaced on another worker first) and exit 0, while a
# load runs against the head without a single failed request.
source "$(dirname "$0")/../integration/lib.sh"
require_python_modules
SRC=${SOURCE_ROOT:?}
scratch_dir WORK preemption

HEAD_PORT=$(free_port) LINK_PORT=$(free_port) NOTICE_PORT=$(free_port)
ENDPOINT=tcp://127.0.0.1:$HEAD_PORT
PIDS=()
SERVER_PID=""
LOAD_PID=""
stop_all() {
  [[ -n $LOAD_PID ]] && kill "$LOAD_PID" 2>/dev/null
  [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap 'rc=$?; stop_all; if [[ $rc -ne 0 ]]; then tail -n 20 "$WORK"/*.log; fi; (exit $rc); cleanup' EXIT

common=(--set cluster.secret=preemption-test --set "models.root=$SRC/examples/models"
        --set runtime.drain_grace_ms=10000)
# node NAME ARGS...: starts shoald in the background, its pid in PID_<NAME>.
node() {
  local name=$1; shift
  "$SHOALD" "${common[@]}" --set "node.name=$name" \
    --set "http.listen=127.0.0.1:$(free_port)" \
    --set "models.cache_dir=$WORK/cache-$name" "$@" >"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  printf -v "PID_$name" '%s' "$!"
}
wait_up() { # NAME...: the head's status lists them up
  for _ in $(seq 1 200); do
    local s all=true
    s=$("$SHOALCTL" --endpoint "$ENDPOINT" --json status 2>/dev/null || true)
    for n in "$@"; do
      grep -q "\"name\":\"$n\",\"role\":\"worker\",\"state\":\"up\"" <<<"$s" || all=false
    done
    $all && return 0
    sleep 0.05
  done
  echo "workers $* not up: $s"; return 1
}
wait_exit() { # PID: its exit code, within 20 s
  for _ in $(seq 1 200); do
    if ! kill -0 "$1" 2>/dev/null; then
      wait "$1"; return $?
    fi
    sleep 0.1
  done
  echo "pid $1 still running 20 s after its notice"; return 124
}

# The notice URL: 404 until the flag file exists, then 200 with an action,
# as a cloud's instance-action metadata does.
"$PYTHON" - "$NOTICE_PORT" "$WORK/url.flag" >"$WORK/server.log" 2>&1 <<'PY' &
import http.server, os, sys
flag = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = os.path.exists(flag)
        body = b'{"action": "terminate"}' if ok else b"not found"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
SERVER_PID=$!

node head --role head --set "gateway.endpoint=$ENDPOINT" \
  --set "cluster.listen=tcp://127.0.0.1:$LINK_PORT"
join=(--join "tcp://127.0.0.1:$LINK_PORT" --set node.preemption_poll_ms=200)
node w1 "${join[@]}" --set "node.preemption_notice_file=$WORK/w1.notice"
node w2 "${join[@]}" --set "node.preemption_notice_url=http://127.0.0.1:$NOTICE_PORT/notice"
wait_up w1 w2

# Load on two models, so that both workers hold a replica; then a spare.
"$SHOALCTL" --endpoint "$ENDPOINT" --json bench --model echo --concurrency 4 \
  --duration 20 --hot-ratio 0 >"$WORK/load_echo.json" 2>"$WORK/load_echo.log" &
LOAD_PID=$!
"$SHOALCTL" --endpoint "$ENDPOINT" --json bench --model slow --concurrency 4 \
  --duration 20 --hot-ratio 0 >"$WORK/load_slow.json" 2>"$WORK/load_slow.log" &
SLOW_PID=$!
sleep 2
node w3 "${join[@]}"
wait_up w3
sleep 1

touch "$WORK/w1.notice"
wait_exit "$PID_w1" || { echo "w1 did not exit 0 after the file notice"; exit 1; }
grep -q "preemption notice ($WORK/w1.notice): draining now" "$WORK/w1.log"
echo "w1: file notice, drained and exited 0"
sleep 1
touch "$WORK/url.flag"
wait_exit "$PID_w2" || { echo "w2 did not exit 0 after the URL notice"; exit 1; }
grep -q "preemption notice (http://127.0.0.1:$NOTICE_PORT/notice): draining now" "$WORK/w2.log"
echo "w2: URL notice, drained and exited 0"

# The head moved the drained workers' replicas before letting them go.
grep -q "(drain)" "$WORK/head.log" ||
  { echo "the head placed no replacement for a draining worker"; exit 1; }

wait "$LOAD_PID"; LOAD_PID=""
wait "$SLOW_PID"
for m in echo slow; do
  "$PYTHON" - "$WORK/load_$m.json" "$m" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
errors = r.get("errors", {})
bad = {k: v for k, v in errors.items() if v}
print(f"{sys.argv[2]}: {r['replies']} replies, errors {bad or 'none'}, timeouts {r.get('timeouts', 0)}")
sys.exit(1 if bad or r.get("timeouts", 0) or r["replies"] == 0 else 0)
PY
done

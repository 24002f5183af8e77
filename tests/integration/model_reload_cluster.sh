# New model versions without a restart, in a cluster: a head and a worker
# (separate shoald processes on loopback) read the same repository
# directory. A version added after both started is read by the head on
# `shoalctl reload`; the worker, asked to start a replica of a version it
# has not seen, re-reads the repository first and serves it.
source "$(dirname "$0")/lib.sh"

require_python_modules
scratch_dir WORK shoal-reload-cluster
REPO=$WORK/repo
WORKER_PID=""
WORKER_LOG=$WORK/worker.log

fail() {
  echo "FAIL: $*"
  exit 1
}

cluster_cleanup() {
  local rc=$?
  if [[ -n "$WORKER_PID" ]] && kill -0 "$WORKER_PID" 2>/dev/null; then
    kill -TERM "$WORKER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$WORKER_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$WORKER_PID" 2>/dev/null || true
    wait "$WORKER_PID" 2>/dev/null || true
  fi
  if [[ $rc -ne 0 && -s "$WORKER_LOG" ]]; then
    echo "---- worker log ----"
    tail -n 60 "$WORKER_LOG"
  fi
  if [[ $rc -eq 0 ]]; then cleanup; else (exit "$rc") || cleanup; fi
}
trap cluster_cleanup EXIT

write_version() {
  mkdir -p "$REPO/$1/$2"
  cat >"$REPO/$1/$2/model.toml.tmp" <<EOT
backend = "synthetic"
[[inputs]]
name = "x"
dtype = "f32"
shape = [-1, 4]
[[outputs]]
name = "y"
dtype = "f32"
shape = [-1, 4]
[synthetic]
scale = $3
offset = $4
EOT
  mv "$REPO/$1/$2/model.toml.tmp" "$REPO/$1/$2/model.toml"
}

write_version m 1 2.0 1.0
LINK="tcp://127.0.0.1:$(free_port)"
SECRET=reload-test-secret
COMMON=(--set "models.root=$REPO" --set "cluster.secret=$SECRET"
        --set cluster.heartbeat_ms=100)
start_node --role head --set "cluster.listen=$LINK" --set node.name=head \
  "${COMMON[@]}"
ctl() { "$SHOALCTL" --endpoint "$ENDPOINT" "$@"; }

mkdir -p "$WORK/worker-cache"
"$SHOALD" --role worker --join "$LINK" --set node.name=w1 \
  --set "http.listen=127.0.0.1:$(free_port)" \
  --set "models.cache_dir=$WORK/worker-cache" "${COMMON[@]}" \
  >>"$WORKER_LOG" 2>&1 &
WORKER_PID=$!
joined=""
for _ in $(seq 1 100); do
  if ctl --json status | grep -q '"w1"'; then
    joined=yes
    break
  fi
  kill -0 "$WORKER_PID" 2>/dev/null || fail "the worker exited"
  sleep 0.1
done
test -n "$joined" || fail "the worker did not join the head"

out=$(ctl --json infer m --version 1 --input "x:f32:1,4:2") || fail "v1: $out"
grep -q '"node": *"w1"' <<<"$out" || fail "v1 not served by the worker: $out"

# Published after both started: the head reads it on reload, the worker
# when it is asked for a replica of it.
write_version m 2 3.0 0.5
out=$(ctl reload) || fail "reload: $out"
grep -q "added m version 2" <<<"$out" || fail "reload did not add m v2: $out"
out=$(ctl --json infer m --version 2 --input "x:f32:1,4:2") || fail "v2: $out"
"$PYTHON" - "$out" <<'PY' || fail "m v2 on the worker: $out"
import json, sys
r = json.loads(sys.argv[1])
assert r["status"] == "OK" and r["version"] == 2 and r["node"] == "w1", r
(y,) = r["outputs"]
assert all(abs(v - 6.5) < 1e-5 for v in y["values"]), y
PY
grep -q "re-reading the model repository" "$WORKER_LOG" ||
  fail "the worker did not re-read its repository for m v2"
echo "model reload in a cluster OK"

# New model versions without a restart, on a live node serving a
# repository directory in /tmp:
#  - a version added while it runs is served after `shoalctl reload` and
#    computes what its manifest says;
#  - a removed version is refused with NOT_FOUND, its idle replica
#    retires, and the node keeps serving the others;
#  - a changed manifest of a loaded version is refused, the log names the
#    file, and the version keeps serving as it was;
#  - with models.poll_ms = 200, a new version is served within seconds
#    with no op at all;
#  - from an HTTP repository (index.toml), a version published with
#    `shoalctl index` is served after `shoalctl reload`, and a changed
#    manifest is refused naming its URL.
source "$(dirname "$0")/lib.sh"

require_python_modules
scratch_dir WORK shoal-reload
REPO=$WORK/repo

fail() {
  echo "FAIL: $*"
  exit 1
}

# write_version MODEL VERSION SCALE OFFSET: y = SCALE * x + OFFSET over 4
# floats a row.
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
  # A manifest appears whole, as a publisher's rename makes it.
  mv "$REPO/$1/$2/model.toml.tmp" "$REPO/$1/$2/model.toml"
}

ctl() { "$SHOALCTL" --endpoint "$ENDPOINT" "$@"; }

SERVER_PID=""
reload_cleanup() {
  local rc=$?
  if [[ -n "$SERVER_PID" ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $rc -eq 0 ]]; then cleanup; else (exit "$rc") || cleanup; fi
}
trap reload_cleanup EXIT

# expect_y MODEL VERSION X WANT: infer with every input X, check every y.
expect_y() {
  local out
  out=$(ctl --json infer "$1" --version "$2" --input "x:f32:1,4:$3") ||
    fail "infer $1 v$2: $out"
  "$PYTHON" - "$out" "$2" "$4" <<'PY' || fail "infer $1 v$2 x=$3: $out"
import json, sys
r = json.loads(sys.argv[1])
assert r["status"] == "OK", r
assert r["version"] == int(sys.argv[2]), r
(y,) = r["outputs"]
assert all(abs(v - float(sys.argv[3])) < 1e-5 for v in y["values"]), y
PY
}

write_version m 1 2.0 1.0
write_version keep 1 1.0 0.0
start_node --set "models.root=$REPO" --set executor.idle_ttl_ms=600000
expect_y m 1 2 5
expect_y keep 1 7 7

# Added while running: unknown until the reload, then served.
write_version m 2 3.0 0.5
set +e
ctl infer m --version 2 >/dev/null 2>&1; rc=$?
set -e
test "$rc" = 1 || fail "v2 was served before the reload (exit $rc)"
out=$(ctl reload) || fail "reload: $out"
grep -q "added m version 2" <<<"$out" || fail "reload did not add m v2: $out"
expect_y m 2 2 6.5
ctl --json models | grep -q '"versions": *\[1, *2\]' ||
  fail "models does not list m v1 and v2: $(ctl --json models)"

# Removed: refused with NOT_FOUND, its idle replica retires, others serve.
rm -rf "$REPO/m/1"
out=$(ctl --json reload) || fail "reload: $out"
"$PYTHON" - "$out" <<'PY' || fail "reload after removal: $out"
import json, sys
r = json.loads(sys.argv[1])
assert r["status"] == "OK", r
assert r["removed"] == [{"model": "m", "version": 1}], r
assert r["added"] == [] and r["refused"] == [], r
PY
out=$(ctl --json infer m --version 1 --input "x:f32:1,4:2" 2>/dev/null || true)
grep -q '"NOT_FOUND"' <<<"$out" || fail "removed v1 not refused: $out"
for _ in $(seq 1 50); do
  grep -q "retiring removed replicas of m v1" "$NODE_LOG" && break
  sleep 0.1
done
grep -q "retiring removed replicas of m v1" "$NODE_LOG" ||
  fail "the replica of the removed m v1 did not retire"
expect_y m 2 3 9.5
expect_y keep 1 8 8

# Changed under a loaded version: refused, named in the log, serves as it was.
write_version m 2 10.0 0.0
set +e
out=$(ctl reload); rc=$?
set -e
test "$rc" = 1 || fail "a refused manifest should exit 1, got $rc: $out"
grep -q "refused m version 2" <<<"$out" || fail "change not refused: $out"
grep -q "refused.*$REPO/m/2/model.toml" "$NODE_LOG" ||
  fail "the log does not name $REPO/m/2/model.toml"
expect_y m 2 4 12.5

# Polling: a new version is served within seconds, with no op.
stop_node
write_version m 2 3.0 0.5
start_node --set "models.root=$REPO" --set models.poll_ms=200
write_version m 3 -1.0 0.0
served=""
for _ in $(seq 1 100); do
  if ctl infer m --version 3 --input "x:f32:1,4:2" >/dev/null 2>&1; then
    served=yes
    break
  fi
  sleep 0.1
done
test -n "$served" || fail "m v3 not served within 10 s of polling"
expect_y m 3 2 -2

# An HTTP repository: published with `shoalctl index`, then reload.
stop_node
"$SHOALCTL" index "$REPO" >/dev/null
"$PYTHON" "$SOURCE_ROOT/tests/integration/range_server.py" --dir "$REPO" \
  --port 0 >"$WORK/port" 2>"$WORK/server.err" &
SERVER_PID=$!
for _ in $(seq 1 50); do
  [[ -s "$WORK/port" ]] && break
  sleep 0.1
done
URL="http://127.0.0.1:$(head -1 "$WORK/port")"
start_node --set "models.root=$URL"
expect_y m 3 1 -1
write_version m 4 5.0 0.0
"$SHOALCTL" index "$REPO" >/dev/null
out=$(ctl reload) || fail "http reload: $out"
grep -q "added m version 4" <<<"$out" || fail "http reload did not add m v4: $out"
expect_y m 4 2 10
write_version m 3 7.0 0.0
set +e
out=$(ctl reload); rc=$?
set -e
test "$rc" = 1 || fail "http: a refused manifest should exit 1, got $rc: $out"
grep -q "refused m version 3.*$URL/m/3/model.toml" <<<"$out" ||
  fail "http: change not refused naming its URL: $out"
expect_y m 3 3 -3
echo "model reload OK"

# A real Prometheus server (Debian's) with the shipped scrape config and
# alert rules against a local cluster (scripts/cluster.sh: a head and two
# workers on loopback): it finds every node through the head's /sd, and
# after a worker is SIGKILLed under load the ShoalNodeDown alert fires
# within the rule's `for` plus two evaluation intervals of the head
# noticing. Only the head's address and the intervals (1 s instead of 15 s,
# so the test takes seconds, not minutes) differ from the shipped file.
source "$(dirname "$0")/../integration/lib.sh"

if ! command -v prometheus >/dev/null; then
  echo "SKIP: prometheus not installed (Debian package prometheus)"
  exit 77
fi
SRC=${SOURCE_ROOT:?}
scratch_dir WORK prometheus-live
export CLUSTER_DIR=$WORK/cluster
export CLUSTER_PORT=$(free_port) CLUSTER_LINK_PORT=$(free_port)
export CLUSTER_HTTP_PORT=$(free_port)
export CLUSTER_MODELS=$SRC/examples/models
PROM_PORT=$(free_port)
PROM_PID=""
LOAD_PID=""
stop_all() {
  [[ -n $LOAD_PID ]] && kill "$LOAD_PID" 2>/dev/null
  [[ -n $PROM_PID ]] && kill "$PROM_PID" 2>/dev/null && wait "$PROM_PID" 2>/dev/null
  "$SRC/scripts/cluster.sh" down >/dev/null 2>&1 || true
}
trap 'rc=$?; stop_all; (exit $rc); cleanup' EXIT

"$SRC/scripts/cluster.sh" up 2 >/dev/null

# The shipped files, with this cluster's head and 1 s intervals.
cp "$SRC/deploy/prometheus/alerts.yml" "$WORK/"
sed -e "s|http://shoal-head:9310/sd|http://127.0.0.1:$CLUSTER_HTTP_PORT/sd|" \
    -e 's/_interval: 15s/_interval: 1s/' -e 's/refresh_interval: 30s/refresh_interval: 1s/' \
    "$SRC/deploy/prometheus/prometheus.yml" >"$WORK/prometheus.yml"
grep -q "127.0.0.1:$CLUSTER_HTTP_PORT/sd" "$WORK/prometheus.yml"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
API=http://127.0.0.1:$PROM_PORT/api/v1

# query PYTHON_EXPRESSION_ON_JSON URL: prints what the expression gives.
query() {
  curl -sf "$2" | "$PYTHON" -c "import json, sys; d = json.load(sys.stdin); print($1)" 2>/dev/null
}

# Every node discovered through /sd and scraped: three targets up.
up=0
for _ in $(seq 1 300); do
  up=$(query "sum(1 for t in d['data']['activeTargets'] if t['health'] == 'up')" "$API/targets" || echo 0)
  [[ $up == 3 ]] && break
  sleep 0.1
done
if [[ $up != 3 ]]; then
  echo "prometheus sees $up of 3 nodes up through /sd"
  curl -s "$API/targets"; tail -20 "$WORK/prometheus.log"
  exit 1
fi
nodes=$(query "sorted(t['labels']['instance'] for t in d['data']['activeTargets'])" "$API/targets")
echo "prometheus discovered: $nodes"

# Load, then a worker killed under it.
"$SHOALCTL" --endpoint "tcp://127.0.0.1:$CLUSTER_PORT" bench --model echo \
  --concurrency 8 --duration 60 --hot-ratio 0 >"$WORK/bench.log" 2>&1 &
LOAD_PID=$!
sleep 2
"$SRC/scripts/cluster.sh" kill w1 >/dev/null
# From the moment the head reports the worker down (shoal_cluster_nodes
# changes then): the rule's for (30 s) plus two evaluations (1 s each),
# plus the scrape (1 s) that carries the change to Prometheus.
for _ in $(seq 1 100); do
  "$SHOALCTL" --endpoint "tcp://127.0.0.1:$CLUSTER_PORT" --json status 2>/dev/null |
    grep -q '"name":"w1","role":"worker","state":"down"' && break
  sleep 0.05
done
killed=$(date +%s.%N)
limit=$((30 + 2 * 1 + 1))
state=""
for _ in $(seq 1 $((limit * 10 + 50))); do
  state=$(query "next((a['state'] for a in d['data']['alerts'] if a['labels']['alertname'] == 'ShoalNodeDown'), '')" "$API/alerts" || true)
  [[ $state == firing ]] && break
  sleep 0.1
done
took=$("$PYTHON" -c "import time; print(round(time.time() - $killed, 1))")
if [[ $state != firing ]]; then
  echo "ShoalNodeDown is '$state' ${took} s after the head reported w1 down"
  curl -s "$API/alerts"
  exit 1
fi
echo "ShoalNodeDown firing ${took} s after the head reported w1 down (limit ${limit} s)"
"$PYTHON" -c "import sys; sys.exit(0 if $took <= $limit else 1)" ||
  { echo "later than the rule's for plus two evaluation intervals"; exit 1; }

# The shipped Prometheus files: the scrape config and the alert rules are
# valid (promtool), every alert passes its unit test (alerts_test.yml), the
# PrometheusRule wrapper matches alerts.yml, and every shoal metric the
# rules and the Grafana dashboard query is one a live node exports.
source "$(dirname "$0")/../integration/lib.sh"

if ! command -v promtool >/dev/null; then
  echo "SKIP: promtool not installed (Debian package prometheus)"
  exit 77
fi
if ! "$PYTHON" -c 'import yaml' 2>/dev/null; then
  echo "SKIP: $PYTHON lacks python3-yaml"
  exit 77
fi
DIR=${SOURCE_ROOT:?}/deploy/prometheus
promtool check config "$DIR/prometheus.yml"
promtool check rules "$DIR/alerts.yml"
(cd "$DIR" && promtool test rules alerts_test.yml)
"$PYTHON" "$DIR/make_prometheusrule.py" --check

# Every alert has a unit test and a runbook section.
for alert in $(grep -oP '^\s*- alert: \K\w+' "$DIR/alerts.yml"); do
  grep -q "alertname: $alert\$" "$DIR/alerts_test.yml" ||
    { echo "alert $alert has no test in alerts_test.yml"; exit 1; }
  anchor=$(tr '[:upper:]' '[:lower:]' <<<"$alert")
  grep -q "^### $alert\$" "$SOURCE_ROOT/docs/operations.md" ||
    { echo "alert $alert has no '### $alert' runbook section (#$anchor) in docs/operations.md"; exit 1; }
done

# The metric families a node exports, against those the files query.
start_node
metrics=$(curl -sf "http://127.0.0.1:$HTTP_PORT/metrics")
"$PYTHON" - "$DIR/alerts.yml" "$DIR/dashboard.json" <<PY
import json, re, sys
exported = set(re.findall(r"^# TYPE (\S+) ", """$metrics""", re.M))
queried = {}
for path in sys.argv[1:]:
    text = open(path).read()
    if path.endswith(".json"):
        json.loads(text)  # the dashboard must be valid JSON
    for name in re.findall(r"\b(shoal_[a-z0-9_]+)", text):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        queried.setdefault(base, path)
missing = sorted(n for n in queried if n not in exported)
for n in missing:
    print(f"{queried[n]}: queries {n}, which no node exports")
print(f"{len(queried)} metric families queried, {len(missing)} unknown")
sys.exit(1 if missing else 0)
PY
echo "prometheus: config, rules, tests, wrapper and dashboard OK"

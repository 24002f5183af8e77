# Tenant limits on a live node, as a client sees them: a rate limit lets
# about rate x seconds + burst through and refuses the rest with
# RESOURCE_EXHAUSTED and retry_after_ms (cache hits count too); max_inflight
# refuses what is over it; max_priority serves a too-urgent request at the
# ceiling; a models allowlist answers PERMISSION_DENIED. The tenant metrics
# pass promtool, and log.requests writes one JSON line per request.
source "$(dirname "$0")/lib.sh"
require_python_modules

scratch_dir DIR tenants
cat >"$DIR/tenants.toml" <<TOML
[tenants.metered]
rate = 100
burst = 10

[tenants.narrow]
max_inflight = 2

[tenants.lowly]
max_priority = 7

[tenants.echoer]
models = ["echo"]

[log]
requests = true
requests_file = "$DIR/requests.log"
TOML
# One request at a time on the slow model, so that the router's queue (and
# its priorities) decides the order.
start_node --config "$DIR/tenants.toml" --set router.inflight_per_replica=1

"$PYTHON" - "$ENDPOINT" <<'PY'
import sys, time, zmq, msgpack, numpy as np

ctx = zmq.Context()
def sock():
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(sys.argv[1])
    return s

def req(i, model, tenant=None, priority=None, value=0.0, cache=None):
    width = 256 if model == "echo" else 16
    r = {"v": 1, "id": i, "op": "infer", "model": model,
         "inputs": [{"name": "x", "dtype": "f32", "shape": [1, width],
                     "data": np.full(width, value, "<f4").tobytes()}]}
    if tenant: r["tenant"] = tenant
    if priority is not None: r["priority"] = priority
    if cache: r["cache"] = cache
    return msgpack.packb(r)

def collect(s, n, timeout=20.0):
    out, end = {}, time.time() + timeout
    while len(out) < n and time.time() < end:
        if s.poll(100):
            m = msgpack.unpackb(s.recv(), raw=False)
            out[m["id"]] = m
    assert len(out) == n, f"{len(out)} of {n} replies"
    return out

# Rate: 1,000 requests over about a second, the same input (cache hits
# after the first), at rate 100 and burst 10.
s = sock()
start = time.time()
for i in range(1000):
    s.send(req(i, "echo", "metered"))
    time.sleep(max(0, start + (i + 1) / 1000 - time.time()))
sent = time.time() - start
replies = collect(s, 1000)
took = time.time() - start
ok = [m for m in replies.values() if m["status"] == "OK"]
refused = [m for m in replies.values() if m["status"] == "RESOURCE_EXHAUSTED"]
assert len(ok) + len(refused) == 1000, {m["status"] for m in replies.values()}
low, high = 0.7 * (10 + 100 * sent), 10 + 100 * took + 2
print(f"rate: {len(ok)} OK, {len(refused)} refused in {sent:.2f} s "
      f"(expected {low:.0f}..{high:.0f})")
assert low <= len(ok) <= high, (len(ok), low, high)
for m in refused:
    assert 1 <= m["retry_after_ms"] <= 20, m
    assert "tenant 'metered'" in m["error"] and "rate" in m["error"], m
assert any(m.get("source") == "cache" for m in ok)

# Models: an allowlist.
s.send(req(2000, "slow", "echoer", cache="bypass"))
s.send(req(2001, "echo", "echoer"))
r = collect(s, 2)
assert r[2000]["status"] == "PERMISSION_DENIED", r[2000]
assert "tenant 'echoer'" in r[2000]["error"] and "slow" in r[2000]["error"]
assert r[2001]["status"] == "OK", r[2001]
print("models:", r[2000]["error"])
# A job is held to the same allowlist: refused at submit, nothing stored.
def submit(i, model, tenant, job):
    m = msgpack.unpackb(req(i, model, tenant, cache="bypass"), raw=False)
    m["op"], m["job"] = "submit", job
    return msgpack.packb(m)
s.send(submit(2010, "slow", "echoer", "echoer-slow"))
s.send(submit(2011, "echo", "echoer", "echoer-echo"))
r = collect(s, 2)
assert r[2010]["status"] == "PERMISSION_DENIED", r[2010]
assert "tenant 'echoer'" in r[2010]["error"], r[2010]
print("models (jobs):", r[2010]["error"])
assert r[2011]["status"] == "OK" and r[2011]["job"] == "echoer-echo", r[2011]
s.send(msgpack.packb({"v": 1, "id": 2012, "op": "wait", "job": "echoer-echo",
                      "tenant": "echoer", "timeout_ms": 10000}))
s.send(msgpack.packb({"v": 1, "id": 2013, "op": "job", "job": "echoer-slow",
                      "tenant": "echoer"}))
r = collect(s, 2)
assert r[2012]["status"] == "OK" and r[2012]["state"] == "done", r[2012]
assert r[2013]["status"] == "NOT_FOUND", r[2013]

# max_inflight = 2: ten slow requests at once, two get in.
for i in range(10):
    s.send(req(3000 + i, "slow", "narrow", value=i, cache="bypass"))
r = collect(s, 10)
ok = [m for m in r.values() if m["status"] == "OK"]
refused = [m for m in r.values() if m["status"] == "RESOURCE_EXHAUSTED"]
print(f"max_inflight: {len(ok)} OK, {len(refused)} refused")
assert 2 <= len(ok) <= 3 and len(ok) + len(refused) == 10, r
for m in refused:
    assert m["retry_after_ms"] >= 1 and "max_inflight" in m["error"], m
# Slots come back with the replies: the tenant is served again.
s.send(req(3100, "slow", "narrow", value=99, cache="bypass"))
assert collect(s, 1)[3100]["status"] == "OK"

# max_priority = 7: lowly's priority 0 is served at 7, after a priority-5
# request that arrived later, while a first request keeps the replica busy.
s.send(req(4000, "slow", None, value=1000, cache="bypass"))
time.sleep(0.005)
s.send(req(4001, "slow", "lowly", priority=0, value=1001, cache="bypass"))
time.sleep(0.002)
s.send(req(4002, "slow", None, priority=5, value=1002, cache="bypass"))
order = []
end = time.time() + 10
while len(order) < 3 and time.time() < end:
    if s.poll(100):
        m = msgpack.unpackb(s.recv(), raw=False)
        assert m["status"] == "OK", m
        order.append(m["id"])
print("max_priority: reply order", order)
assert order == [4000, 4002, 4001], order

# A tenant nobody configured shares default's limits, labelled other.
s.send(req(5000, "echo", "stranger"))
assert collect(s, 1)[5000]["status"] == "OK"
PY

metrics=$(curl -sf "http://127.0.0.1:$HTTP_PORT/metrics")
if command -v promtool >/dev/null; then
  echo "$metrics" | promtool check metrics
else
  echo "promtool not installed: the exposition format is not checked"
fi
for pattern in 'shoal_tenant_requests_total\{tenant="metered",status="OK"\} [0-9]+' \
               'shoal_tenant_requests_total\{tenant="metered",status="RESOURCE_EXHAUSTED"\} [0-9]+' \
               'shoal_tenant_rejected_total\{tenant="metered",reason="rate"\} [0-9]+' \
               'shoal_tenant_rejected_total\{tenant="narrow",reason="inflight"\} [0-9]+' \
               'shoal_tenant_rejected_total\{tenant="echoer",reason="model"\} 2' \
               'shoal_tenant_requests_total\{tenant="other",status="OK"\} 1' \
               'shoal_tenant_requests_total\{tenant="lowly",status="OK"\} 1'; do
  grep -Eq "^$pattern\$" <<<"$metrics" || { echo "missing sample: $pattern"; exit 1; }
done
grep -q 'stranger' <<<"$metrics" && { echo "an unconfigured tenant became a label"; exit 1; }

# The request log: one JSON line per request, no tensor data.
"$PYTHON" - "$DIR/requests.log" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
keys = {"time", "id", "tenant", "model", "version", "op", "status", "source",
        "queue_us", "compute_us", "total_us", "bytes_in", "bytes_out"}
for l in lines:
    assert set(l) == keys, l
metered = [l for l in lines if l["tenant"] == "metered"]
assert len(metered) == 1000, len(metered)
assert any(l["source"] == "cache" for l in metered)
slow = [l for l in lines if l["tenant"] == "narrow" and l["status"] == "OK"]
assert slow and all(l["compute_us"] > 0 and l["bytes_out"] > 64 for l in slow), slow
assert any(l["tenant"] == "stranger" for l in lines)
print(f"request log: {len(lines)} lines")
PY
echo "tenant limits OK"

# Fair share: tenant flood sends a slow model ten times what it can serve,
# tenant trickle a tenth of it. Weighted round robin in the router's queue
# (and a full queue making room for the tenant holding less of it) keeps
# trickle's p99 latency within 3x of its p99 alone, and none of trickle's
# requests is refused.
source "$(dirname "$0")/lib.sh"
require_python_modules

scratch_dir DIR fair-share
mkdir -p "$DIR/models/fair/1"
# 20 ms a request, one at a time: 50 requests/s.
cat >"$DIR/models/fair/1/model.toml" <<'TOML'
backend = "synthetic"
pinned = true
queue_capacity = 200

[[inputs]]
name = "x"
dtype = "f32"
shape = [-1, 16]

[[outputs]]
name = "y"
dtype = "f32"
shape = [-1, 16]

[batching]
max_batch = 1
max_delay_us = 0

[cache]
enabled = false

[synthetic]
cost_per_batch_us = 20000
TOML
cat >"$DIR/tenants.toml" <<'TOML'
[tenants.flood]
weight = 1

[tenants.trickle]
weight = 1
TOML
# One request on the replica at a time: the rest wait where the fair share
# is decided.
start_node --config "$DIR/tenants.toml" --set "models.root=$DIR/models" \
  --set router.inflight_per_replica=1

"$PYTHON" - "$ENDPOINT" <<'PY'
import sys, threading, time, zmq, msgpack, numpy as np

ctx = zmq.Context()
def sock():
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(sys.argv[1])
    return s

def req(i, tenant):
    return msgpack.packb({"v": 1, "id": i, "model": "fair", "tenant": tenant,
        "inputs": [{"name": "x", "dtype": "f32", "shape": [1, 16],
                    "data": np.full(16, i % 1000, "<f4").tobytes()}]})

CAPACITY = 50  # requests/s

def trickle(seconds):
    """10% of capacity, one request at a time; latencies in ms."""
    s, lat, refused = sock(), [], []
    n = int(seconds * CAPACITY / 10)
    start = time.time()
    for i in range(n):
        time.sleep(max(0, start + i * 10 / CAPACITY - time.time()))
        t0 = time.time()
        s.send(req(i, "trickle"))
        assert s.poll(10000), "trickle got no reply in 10 s"
        m = msgpack.unpackb(s.recv(), raw=False)
        lat.append((time.time() - t0) * 1000)
        if m["status"] != "OK":
            refused.append(m)
    s.close()
    return np.array(lat), refused

stop = threading.Event()
flood_stats = {"sent": 0, "ok": 0, "refused": 0}
def flood():
    """10x capacity, in bursts of 10 every 10 ms."""
    s, i = sock(), 0
    start = time.time()
    while not stop.is_set():
        for _ in range(10):
            s.send(req(100000 + i, "flood"))
            i += 1
        while s.poll(0):
            m = msgpack.unpackb(s.recv(), raw=False)
            flood_stats["ok" if m["status"] == "OK" else "refused"] += 1
        time.sleep(max(0, start + i / (10 * CAPACITY) - time.time()))
    flood_stats["sent"] = i
    s.close()

def attempt():
    alone, refused_alone = trickle(6)
    assert not refused_alone, refused_alone
    stop.clear()
    flood_stats.update(sent=0, ok=0, refused=0)
    thread = threading.Thread(target=flood)
    thread.start()
    time.sleep(1.5)  # the flood fills the queue
    shared, refused_shared = trickle(6)
    stop.set()
    thread.join()
    p99_alone, p99_shared = np.percentile(alone, 99), np.percentile(shared, 99)
    print(f"trickle alone:      p50 {np.median(alone):.1f} ms, p99 {p99_alone:.1f} ms")
    print(f"trickle with flood: p50 {np.median(shared):.1f} ms, p99 {p99_shared:.1f} ms "
          f"({p99_shared / p99_alone:.2f}x), refused {len(refused_shared)}")
    print(f"flood: sent {flood_stats['sent']}, OK {flood_stats['ok']}, "
          f"refused {flood_stats['refused']}")
    assert not refused_shared, refused_shared[:3]
    assert flood_stats["refused"] > 0, "the flood did not overload the model"
    return p99_shared <= 3 * p99_alone

trickle(0.5)  # warm up
# A noisy machine can stall one of ~30 samples: up to three measurements,
# the first within 3x passes (a refusal of trickle's fails at once).
for tries in range(3):
    if attempt():
        break
    print("over 3x: measuring again")
else:
    sys.exit("trickle's p99 with the flood was over 3x its p99 alone, 3 times")
PY
metrics=$(curl -sf "http://127.0.0.1:$HTTP_PORT/metrics")
grep -Eq '^shoal_tenant_rejected_total\{tenant="flood",reason="queue"\} [1-9]' <<<"$metrics" ||
  { echo "flood's refusals are not counted"; exit 1; }
if grep -Eq '^shoal_tenant_rejected_total\{tenant="trickle"' <<<"$metrics"; then
  echo "trickle was refused"; exit 1
fi
echo "fair share OK"

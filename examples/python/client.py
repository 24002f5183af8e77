#!/usr/bin/env python3
"""A minimal shoal client, written from the wire protocol (docs/protocol.md).

Each request and each reply is one MessagePack map in one ZeroMQ frame. The
client connects a DEALER socket to the gateway's ROUTER endpoint, tags every
request with an id of its choosing, and matches replies by that id. When a
reply does not come in time it resends the *same* request with the *same* id:
the id is the server's retry key, so a retry never runs the model twice.

Needs only Debian's python3-zmq and python3-msgpack:

    /usr/bin/python3 examples/python/client.py --endpoint tcp://127.0.0.1:5555

It lists the models, runs one inference with generated inputs, repeats it and
checks that the repeat was answered from the cache. The exit status is 0 when
every reply was OK and the repeat was a cache hit.

A gateway with CURVE keys (security.curve_secret_key_file) takes only CURVE
clients whose public key is in its clients file. Give the gateway's public
key and this client's secret key (files from `shoalctl keygen`, or Z85):

    /usr/bin/python3 examples/python/client.py --endpoint tcp://HOST:5555 \
        --server-public-key gateway.pub --client-key alice.key

A client whose key is not listed gets no session at all: no reply, only
timeouts.
With --job it also submits the same inputs as a durable job (op `submit`,
the job id being the idempotency key), waits for it with progress frames
(op `wait`, `progress: true`) and prints its result.
"""

import os
import argparse
import random
import struct
import sys
import time

import msgpack
import zmq

PROTOCOL_VERSION = 1

# dtype name -> struct format character (all data is little-endian).
# bf16 has no struct code; it is handled by hand below.
STRUCT_CODES = {
    "f32": "f",
    "f64": "d",
    "f16": "e",
    "i8": "b",
    "i16": "h",
    "i32": "i",
    "i64": "q",
    "u8": "B",
    "bool": "?",
}


class NoReply(Exception):
    """No reply arrived after every attempt."""


class Client:
    """One DEALER socket; one request at a time, retried with the same id."""

    def __init__(self, endpoint, timeout_ms=5000, retries=2,
                 server_public_key=None, client_secret_key=None):
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        # Do not hang at exit on requests the gateway never took.
        self.socket.setsockopt(zmq.LINGER, 0)
        if server_public_key is not None:
            # CURVE: the keys are set before connect(). The public key of
            # our own pair follows from the secret one.
            self.socket.curve_serverkey = server_public_key
            self.socket.curve_secretkey = client_secret_key
            self.socket.curve_publickey = zmq.curve_public(client_secret_key)
        self.socket.connect(endpoint)
        # Ids only need to be unique among this client's requests; a random
        # start keeps two runs of the script apart in the server's logs.
        self.next_id = random.getrandbits(32)

    def close(self):
        self.socket.close()

    def call(self, op, on_progress=None, **fields):
        """Sends one request and returns the reply map (any status).

        Progress frames (`event: "progress"`) of a request that asked for
        them go to on_progress; each one restarts the attempt's timeout."""
        request_id = self.next_id
        self.next_id += 1
        request = {"v": PROTOCOL_VERSION, "id": request_id, "op": op}
        request.update(fields)
        frame = msgpack.packb(request, use_bin_type=True)

        attempts = 1 + self.retries
        for _ in range(attempts):
            self.socket.send(frame)
            deadline = time.monotonic() + self.timeout_ms / 1000.0
            reply = self._wait_for(request_id, deadline, on_progress)
            if reply is not None:
                return reply
        raise NoReply(
            f"no reply from {self.endpoint} after {attempts} attempts")

    def _wait_for(self, request_id, deadline, on_progress=None):
        while True:
            left_ms = (deadline - time.monotonic()) * 1000.0
            if left_ms <= 0 or not self.socket.poll(left_ms, zmq.POLLIN):
                return None
            # A REQ-style peer puts an empty frame first: take the last one.
            payload = self.socket.recv_multipart()[-1]
            try:
                reply = msgpack.unpackb(payload, raw=False)
            except Exception:
                continue  # not MessagePack: ignore it
            # A late reply to an earlier attempt or request has another id.
            if not isinstance(reply, dict) or reply.get("id") != request_id:
                continue
            if reply.get("event") == "progress":
                if on_progress:
                    on_progress(reply)
                deadline = time.monotonic() + self.timeout_ms / 1000.0
                continue
            return reply


def read_key(text_or_file):
    """A Z85 key (40 characters), or the first line of a key file.

    Z85 has '/' and '.' in its alphabet, so 40 characters that name no
    existing file are the key itself."""
    if len(text_or_file) == 40 and not os.path.exists(text_or_file):
        return text_or_file.encode()
    with open(text_or_file, encoding="ascii") as f:
        return f.readline().strip().encode()


# -- tensors ------------------------------------------------------------------

def encode_tensor(name, dtype, shape, values):
    """A tensor map: data is little-endian, row-major, prod(shape) values."""
    if dtype == "bf16":
        # bfloat16 is the upper half of a float32.
        f32 = struct.pack(f"<{len(values)}f", *values)
        data = b"".join(f32[i + 2:i + 4] for i in range(0, len(f32), 4))
    else:
        data = struct.pack(f"<{len(values)}{STRUCT_CODES[dtype]}", *values)
    return {"name": name, "dtype": dtype, "shape": list(shape), "data": data}


def decode_tensor(tensor):
    """The values of a tensor map as a flat Python list."""
    dtype, data = tensor["dtype"], tensor["data"]
    if dtype == "bf16":
        padded = b"".join(b"\0\0" + data[i:i + 2]
                          for i in range(0, len(data), 2))
        return list(struct.unpack(f"<{len(data) // 2}f", padded))
    code = STRUCT_CODES[dtype]
    count = len(data) // struct.calcsize(code)
    return list(struct.unpack(f"<{count}{code}", data))


def generate_inputs(input_specs, seed=0):
    """Inputs for a model's spec: batch axis (-1) of 1, fixed values."""
    rng = random.Random(seed)
    inputs = []
    for spec in input_specs:
        shape = [1 if d < 0 else d for d in spec["shape"]]
        count = 1
        for d in shape:
            count *= d
        dtype = spec["dtype"]
        if dtype in ("f32", "f64", "f16", "bf16"):
            values = [round(rng.uniform(-1.0, 1.0), 3) for _ in range(count)]
        elif dtype == "bool":
            values = [rng.random() < 0.5 for _ in range(count)]
        elif dtype == "u8":
            values = [rng.randrange(256) for _ in range(count)]
        else:
            values = [rng.randrange(100) for _ in range(count)]
        inputs.append(encode_tensor(spec["name"], dtype, shape, values))
    return inputs


# -- printing -------------------------------------------------------------------

def spec_text(specs):
    return " ".join(f"{s['name']}:{s['dtype']}{s['shape']}"
                    for s in specs) or "-"


def print_models(models):
    print("models:")
    for m in models:
        versions = ",".join(str(v) for v in m.get("versions", []))
        print(f"  {m['name']} (versions {versions or '-'}, "
              f"{m.get('state', '?')}): "
              f"inputs {spec_text(m.get('inputs', []))} -> "
              f"outputs {spec_text(m.get('outputs', []))}")


def print_reply(label, reply):
    print(f"{label}: status {reply.get('status')}, "
          f"source {reply.get('source', '-')}, "
          f"model {reply.get('model', '-')} v{reply.get('version', '-')}, "
          f"node {reply.get('node', '-')}")
    if reply.get("status") != "OK":
        print(f"  error: {reply.get('error', '(no reason given)')}")
        return
    timing = reply.get("timing_us", {})
    print(f"  timing: queue {timing.get('queue', '-')} us, "
          f"compute {timing.get('compute', '-')} us, "
          f"total {timing.get('total', '-')} us")
    for tensor in reply.get("outputs", []):
        values = decode_tensor(tensor)
        head = ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v)
                         for v in values[:8])
        more = f", ... ({len(values)} values)" if len(values) > 8 else ""
        print(f"  {tensor['name']} {tensor['dtype']} {tensor['shape']}: "
              f"{head}{more}")


# -- durable jobs -------------------------------------------------------------

def run_job(client, job_id, model, inputs):
    """Submits a job (submitting the same id again returns the same job),
    then waits for it, printing its progress frames."""
    sub = client.call("submit", job=job_id, model=model, inputs=inputs)
    print(f"submit {job_id}: {sub.get('status')} {sub.get('state', '')}")
    if sub.get("status") != "OK":
        print(f"error: {sub.get('error')}", file=sys.stderr)
        return 1

    def progress(frame):
        p = frame.get("progress", {})
        print(f"  {job_id}: {p.get('done')}/{p.get('total')}")

    done = client.call("wait", on_progress=progress, job=job_id,
                       timeout_ms=60000, progress=True)
    print_reply(f"job {job_id} {done.get('state')}", done)
    return 0 if done.get("status") == "OK" else 1


# -- main -------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="tcp://127.0.0.1:5555",
                        help="gateway endpoint (default %(default)s)")
    parser.add_argument("--model",
                        help="model to run (default: the first listed)")
    parser.add_argument("--timeout-ms", type=int, default=5000,
                        help="wait per attempt (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the generated inputs")
    parser.add_argument("--server-public-key",
                        help="CURVE: the gateway's public key (.pub or Z85)")
    parser.add_argument("--client-key",
                        help="CURVE: this client's secret key (.key or Z85)")
    parser.add_argument("--job", metavar="ID",
                        help="also submit the inputs as durable job ID and "
                             "wait for it")
    args = parser.parse_args()

    if (args.server_public_key is None) != (args.client_key is None):
        parser.error("CURVE needs both --server-public-key and --client-key")
    curve = {}
    if args.server_public_key is not None:
        curve = {"server_public_key": read_key(args.server_public_key),
                 "client_secret_key": read_key(args.client_key)}
    client = Client(args.endpoint, timeout_ms=args.timeout_ms, **curve)
    try:
        reply = client.call("models")
        if reply.get("status") != "OK":
            print(f"models: {reply.get('status')}: {reply.get('error')}",
                  file=sys.stderr)
            return 1
        models = reply.get("models", [])
        print_models(models)
        if not models:
            print("error: the node lists no models", file=sys.stderr)
            return 1
        name = args.model or models[0]["name"]
        model = next((m for m in models if m["name"] == name), None)
        if model is None:
            print(f"error: unknown model {name!r}", file=sys.stderr)
            return 1

        # The same inputs twice: the second request (a new id, so not a
        # retry) must be answered from the cache.
        inputs = generate_inputs(model.get("inputs", []), args.seed)
        first = client.call("infer", model=name, inputs=inputs, cache="use")
        print_reply("first", first)
        second = client.call("infer", model=name, inputs=inputs, cache="use")
        print_reply("second", second)
        if args.job and run_job(client, args.job, name, inputs) != 0:
            return 1
    except NoReply as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    finally:
        client.close()

    if first.get("status") != "OK" or second.get("status") != "OK":
        print("error: a request failed", file=sys.stderr)
        return 1
    if second.get("source") != "cache":
        print(f"error: the repeated request was served from "
              f"{second.get('source')!r}, not 'cache'", file=sys.stderr)
        return 1
    print("repeat served from cache: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

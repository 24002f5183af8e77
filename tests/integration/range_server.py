#!/usr/bin/python3
"""A test HTTP server for the model store: serves a directory with HEAD and
single-range GET support (206 + Content-Range), and injects faults on demand.

Standard library only, so the Debian python3 runs it without packages.

  range_server.py --dir D [--port 0] [--log FILE] [--drop-after BYTES]
                  [--ignore-range]

--port 0 picks a free port; the chosen port is the first line on stdout.
--log appends one line per request: METHOD PATH RANGE STATUS.
--drop-after closes the connection after that many body bytes on the first
GET of each file; later GETs are served normally.
--ignore-range answers every GET with 200 and the whole file.
The server exits on SIGTERM or SIGINT.
"""

import argparse
import http.server
import os
import re
import signal
import socket
import sys
import threading
import urllib.parse

CHUNK = 256 * 1024


def parse_range(header, size):
    """Returns (first, last) inclusive, None for no usable range, or 'bad'."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None  # RFC 9110: ignore a Range header we do not understand
    if m.group(1) == "":
        n = int(m.group(2))
        if n == 0:
            return "bad"
        return (max(0, size - n), size - 1)
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) != "" else size - 1
    if first >= size or last < first:
        return "bad"
    return (first, min(last, size - 1))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "shoal-range-server"

    def log_message(self, fmt, *args):
        pass  # the --log file is the record; keep test output quiet

    def record(self, status):
        cfg = self.server.cfg
        if not cfg.log:
            return
        rng = self.headers.get("Range") or "-"
        line = "%s %s %s %d\n" % (self.command, self.path, rng.replace(" ", ""),
                                  status)
        with self.server.lock:
            with open(cfg.log, "a") as f:
                f.write(line)

    def resolve(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            return None
        full = os.path.join(self.server.cfg.dir, *parts)
        return full if os.path.isfile(full) else None

    def fail(self, status):
        self.record(status)
        body = ("%d\n" % status).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        full = self.resolve()
        if full is None:
            return self.fail(404)
        size = os.path.getsize(full)
        self.record(200)
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("Content-Type", "application/octet-stream")
        if not self.server.cfg.ignore_range:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self):
        cfg = self.server.cfg
        full = self.resolve()
        if full is None:
            return self.fail(404)
        size = os.path.getsize(full)
        rng = None
        if not cfg.ignore_range:
            rng = parse_range(self.headers.get("Range"), size)
        if rng == "bad":
            self.record(416)
            self.send_response(416)
            self.send_header("Content-Range", "bytes */%d" % size)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        first, last = rng if rng else (0, size - 1)
        length = last - first + 1 if size > 0 else 0
        status = 206 if rng else 200
        drop = None
        if cfg.drop_after is not None:
            with self.server.lock:
                if full not in self.server.dropped:
                    self.server.dropped.add(full)
                    drop = cfg.drop_after
        self.record(status)
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", "application/octet-stream")
        if not cfg.ignore_range:
            self.send_header("Accept-Ranges", "bytes")
        if rng:
            self.send_header("Content-Range",
                             "bytes %d-%d/%d" % (first, last, size))
        self.end_headers()
        sent = 0
        with open(full, "rb") as f:
            f.seek(first)
            while sent < length:
                n = min(CHUNK, length - sent)
                if drop is not None:
                    n = min(n, drop - sent)
                    if n <= 0:
                        # Simulate a dying server: the client sees a short body.
                        self.wfile.flush()
                        self.close_connection = True
                        try:
                            self.connection.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        return
                buf = f.read(n)
                if not buf:
                    break
                self.wfile.write(buf)
                sent += len(buf)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--log")
    ap.add_argument("--drop-after", type=int)
    ap.add_argument("--ignore-range", action="store_true")
    cfg = ap.parse_args()
    cfg.dir = os.path.abspath(cfg.dir)

    server = http.server.ThreadingHTTPServer((cfg.host, cfg.port), Handler)
    server.daemon_threads = True
    server.cfg = cfg
    server.lock = threading.Lock()
    server.dropped = set()

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except SystemExit:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""httpd.py - the local HTTP server of pgqlua's tests (pgq.http).

Listens on 127.0.0.1 only (HTTPS with --tls-cert), on a free port it writes to --port-file, and
stops by itself after --lifetime seconds (or when --parent-pid is gone).
HTTP/1.1 with keep-alive.  Paths:
  /ok, /anything-else  200, body "ok"
  /echo                200, JSON {method, path, headers, body}
  /status/N            status N (429 and 503 carry Retry-After: ?retry_after=, default 1)
  /flaky/NAME          ?status= (default 500; 429 and 503 with Retry-After: ?retry_after=,
                       default 1) for the first ?fail= (default 1) requests of NAME, then 200
  /hang                never answers (until the client goes or the lifetime ends)
  /reset               headers and half the body, then a TCP reset
  /slow                answers after ?ms= milliseconds (default 20)
  /big                 ?bytes= bytes of body
  /stats               JSON {connections, requests, keys, no_key, paths} (not counted, nor are
                       connections that asked only for /stats)
keys counts the distinct Idempotency-Key headers received, no_key the
requests without one.  --nodelay sets TCP_NODELAY on each
connection: a response's headers and body go out in two writes, and without it Nagle holds the
body until the client's delayed ACK, about 40 ms per response on a kept connection.
"""
import argparse
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
STATS = {"connections": 0, "requests": 0, "paths": {}, "no_key": 0}
KEYS = set()
FLAKY = {}
MAX_BODY = 64 * 1024 * 1024


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pgqlua-test-httpd"

    counted = False   # this connection is in STATS["connections"]

    def log_message(self, fmt, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        if self.server.nodelay:
            # the headers and the body go out in two writes: without this,
            # Nagle holds the body until the client's delayed ACK (~40 ms)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def answer(self, status, body=b"", headers=None):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(n, MAX_BODY)) if n else b""
        path = url.path
        if path == "/stats":
            with LOCK:
                out = dict(STATS, keys=len(KEYS))
            return self.answer(200, json.dumps(out).encode(), {"Content-Type": "application/json"})
        with LOCK:
            if not self.counted:
                self.counted = True
                STATS["connections"] += 1
            STATS["requests"] += 1
            STATS["paths"][path] = STATS["paths"].get(path, 0) + 1
            key = self.headers.get("Idempotency-Key")
            if key is not None:
                KEYS.add(key)
            else:
                STATS["no_key"] += 1
        if path == "/echo":
            doc = {"method": self.command, "path": self.path, "body": body.decode("utf-8", "replace"),
                   "headers": {k.lower(): v for k, v in self.headers.items()}}
            return self.answer(200, json.dumps(doc, sort_keys=True).encode(),
                               {"Content-Type": "application/json", "X-Echo": "yes"})
        if path.startswith("/status/"):
            status = int(path.split("/")[2])
            hdrs = {"X-Status": str(status)}
            if status in (429, 503):
                hdrs["Retry-After"] = q.get("retry_after", "1")
            return self.answer(status, ("status %d" % status).encode(), hdrs)
        if path.startswith("/flaky/"):
            with LOCK:
                FLAKY[path] = FLAKY.get(path, 0) + 1
                seen = FLAKY[path]
            if seen <= int(q.get("fail", "1")):
                status = int(q.get("status", "500"))
                hdrs = {"Retry-After": q.get("retry_after", "1")} if status in (429, 503) else {}
                return self.answer(status, b"flaky", hdrs)
            return self.answer(200, b"ok")
        if path == "/hang":
            self.server.stopped.wait(self.server.lifetime)
            self.close_connection = True
            return None
        if path == "/reset":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 500)
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return None
        if path == "/slow":
            time.sleep(int(q.get("ms", "20")) / 1000.0)
            return self.answer(200, b"slow")
        if path == "/big":
            return self.answer(200, b"b" * int(q.get("bytes", "1000")))
        return self.answer(200, b"ok")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--lifetime", type=float, default=600)
    ap.add_argument("--parent-pid", type=int, default=0)
    ap.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM, key included or --tls-key)")
    ap.add_argument("--tls-key")
    ap.add_argument("--nodelay", action="store_true", help="TCP_NODELAY on each connection (no ~40 ms Nagle wait"
                    " before a response's body)")
    a = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.lifetime = a.lifetime
    srv.nodelay = a.nodelay
    srv.stopped = threading.Event()
    srv.request_queue_size = 128
    if a.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls_cert, a.tls_key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, a.port_file)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    end = time.monotonic() + a.lifetime
    while time.monotonic() < end:
        if a.parent_pid:
            try:
                os.kill(a.parent_pid, 0)
            except OSError:
                break
        time.sleep(0.2)
    srv.stopped.set()
    srv.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()

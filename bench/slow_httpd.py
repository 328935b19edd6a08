#!/usr/bin/python3
"""slow_httpd.py - the HTTP receiver of bench/http.sh.

One asyncio loop (no thread per connection, so the server is not what a
benchmark of many requests in flight measures): every request is answered
200 after `ms` milliseconds (`/slow?ms=20`), with HTTP/1.1 keep-alive.
`GET /stats` answers {"connections": C, "requests": R, "keys": K}: the TCP
connections accepted, the requests answered (stats excluded) and the
distinct Idempotency-Key values seen.

    /usr/bin/python3 bench/slow_httpd.py --port-file FILE [--parent-pid PID]
"""

import argparse
import asyncio
import json
import os
import re

STATS = {"connections": 0, "requests": 0}
KEYS = set()


async def serve(reader, writer):
    STATS["connections"] += 1
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            target = lines[0].split(" ")[1]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", "0"))
            if n:
                await reader.readexactly(n)
            if target == "/stats":
                body = json.dumps(dict(STATS, keys=len(KEYS))).encode()
            else:
                STATS["requests"] += 1
                if "idempotency-key" in headers:
                    KEYS.add(headers["idempotency-key"])
                m = re.search(r"[?&]ms=(\d+)", target)
                await asyncio.sleep(int(m.group(1)) / 1000.0 if m else 0.02)
                body = b"ok"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, IndexError):
        pass
    finally:
        writer.close()


async def watch_parent(pid):
    while True:
        await asyncio.sleep(1)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--parent-pid", type=int, default=0)
    args = ap.parse_args()
    srv = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
    port = srv.sockets[0].getsockname()[1]
    with open(args.port_file + ".tmp", "w") as f:
        f.write("%d\n" % port)
    os.rename(args.port_file + ".tmp", args.port_file)
    if args.parent_pid:
        asyncio.ensure_future(watch_parent(args.parent_pid))
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())

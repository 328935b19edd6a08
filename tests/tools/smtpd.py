#!/usr/bin/python3
"""smtpd.py - the local SMTP server of pgqlua's tests (pgq.mail.send).

Listens on 127.0.0.1 only, on a free port it writes to --port-file, and stops by itself after
--lifetime seconds (or when --parent-pid is gone).  ESMTP with EHLO, MAIL, RCPT, DATA, RSET, NOOP,
QUIT and, with --user and --password, AUTH PLAIN (a wrong login gets 535).  A recipient whose
local part starts with "nobody" is refused: "550 5.1.1 <ADDR>: no such user here"; one whose
local part starts with "hang" gets no answer until the client goes.
Each mail accepted is written to --spool as N.json: {from, rcpt, data, user, connection}
(connection: the number of the TCP connection it came on, from 1).
"""
import argparse
import base64
import json
import os
import socketserver
import sys
import threading
import time

LOCK = threading.Lock()
COUNT = {"mails": 0, "connections": 0}


class Handler(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write((line + "\r\n").encode())
        self.wfile.flush()

    def handle(self):
        with LOCK:
            COUNT["connections"] += 1
            conn = COUNT["connections"]
        srv = self.server
        user, mail_from, rcpt = None, None, []
        self.reply("220 127.0.0.1 pgqlua-test-smtpd ready")
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            arg = line[len(verb):].strip()
            if verb in ("EHLO", "HELO"):
                if verb == "HELO":
                    self.reply("250 127.0.0.1")
                    continue
                self.wfile.write(b"250-127.0.0.1\r\n250-8BITMIME\r\n")
                if srv.auth:
                    self.wfile.write(b"250-AUTH PLAIN\r\n")
                self.reply("250 SIZE 10485760")
            elif verb == "AUTH" and srv.auth:
                parts = arg.split()
                if len(parts) == 1 and parts[0].upper() == "PLAIN":
                    self.reply("334 ")
                    parts.append(self.rfile.readline().decode().strip())
                try:
                    _, u, p = base64.b64decode(parts[1]).decode().split("\0")
                except Exception:
                    self.reply("501 5.5.2 cannot decode the login")
                    continue
                if (u, p) == srv.auth:
                    user = u
                    self.reply("235 2.7.0 authenticated")
                else:
                    self.reply("535 5.7.8 authentication credentials invalid")
            elif verb == "MAIL":
                if srv.auth and not user:
                    self.reply("530 5.7.0 authentication required")
                    continue
                mail_from, rcpt = arg.split(":", 1)[1].strip().split(" ")[0].strip("<>"), []
                self.reply("250 2.1.0 ok")
            elif verb == "RCPT":
                addr = arg.split(":", 1)[1].strip().strip("<>")
                if addr.lower().startswith("hang"):
                    self.rfile.readline()   # no answer until the client goes
                    return
                if addr.lower().startswith("nobody"):
                    self.reply("550 5.1.1 <%s>: no such user here" % addr)
                else:
                    rcpt.append(addr)
                    self.reply("250 2.1.5 ok")
            elif verb == "DATA":
                if mail_from is None or not rcpt:
                    self.reply("503 5.5.1 need MAIL and RCPT first")
                    continue
                self.reply("354 end with <CRLF>.<CRLF>")
                lines = []
                while True:
                    raw = self.rfile.readline()
                    if not raw or raw == b".\r\n":
                        break
                    if raw.startswith(b".."):
                        raw = raw[1:]
                    lines.append(raw)
                with LOCK:
                    COUNT["mails"] += 1
                    n = COUNT["mails"]
                tmp = os.path.join(srv.spool, "%d.tmp" % n)
                with open(tmp, "w") as f:
                    json.dump({"from": mail_from, "rcpt": rcpt, "user": user, "connection": conn,
                               "data": b"".join(lines).decode("utf-8", "replace")}, f)
                os.rename(tmp, os.path.join(srv.spool, "%d.json" % n))
                mail_from, rcpt = None, []
                self.reply("250 2.0.0 queued as %d" % n)
            elif verb == "RSET":
                mail_from, rcpt = None, []
                self.reply("250 2.0.0 ok")
            elif verb == "NOOP":
                self.reply("250 2.0.0 ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 bye")
                return
            else:
                self.reply("502 5.5.2 command not recognised")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--spool", required=True)
    ap.add_argument("--lifetime", type=float, default=600)
    ap.add_argument("--parent-pid", type=int, default=0)
    ap.add_argument("--user")
    ap.add_argument("--password")
    a = ap.parse_args()
    os.makedirs(a.spool, exist_ok=True)
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.spool = a.spool
    srv.auth = (a.user, a.password) if a.user else None
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, a.port_file)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    end = time.monotonic() + a.lifetime
    while time.monotonic() < end:
        if a.parent_pid:
            try:
                os.kill(a.parent_pid, 0)
            except OSError:
                break
        time.sleep(0.2)
    srv.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()

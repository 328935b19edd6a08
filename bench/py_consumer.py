#!/usr/bin/python3
"""py_consumer.py - the Skytools peer for bench/run.sh.

A plain pgq.Consumer subclass, written as a user would write it.  Run with
Debian's /usr/bin/python3 (python3-pgq, python3-skytools, python3-psycopg2):

    /usr/bin/python3 bench/py_consumer.py -q CONFIG.ini

The ini's [py_consumer] section has queue_name, consumer_name, src_db (a
libpq conninfo), bench_mode (noop | insert | http), http_url (for http:
each event POSTed as JSON with urllib, waited for), pgq_lazy_fetch and
loop_delay = 0: with loop_delay 0 skytools' DBScript.run() leaves its loop
on the first work() that found no batch, so the process exits when the
queue is drained (no daemon, no patching of pgq internals).
"""

import json
import sys
import urllib.request

import pgq


class BenchConsumer(pgq.Consumer):
    def __init__(self, args):
        super().__init__("py_consumer", "src_db", args)
        self.mode = self.cf.get("bench_mode", "noop")
        self.insert = self.mode == "insert"
        self.url = self.cf.get("http_url", "") if self.mode == "http" else ""

    def process_event(self, db, ev):
        if self.url:
            req = urllib.request.Request(self.url, data=json.dumps({"id": ev.id}).encode(),
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                r.read()
                if r.status != 200:
                    ev.tag_retry(5)
                    return
        if self.insert:
            curs = db.cursor()
            curs.execute("insert into bench_sink (id, data) values (%s, %s)", [ev.id, ev.data])
        ev.tag_done()


if __name__ == "__main__":
    BenchConsumer(sys.argv[1:]).start()

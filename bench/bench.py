#!/usr/bin/python3
"""bench.py - the driver behind bench/run.sh (see there and README "Benchmarks").

The same N pre-inserted events, cut into batches of exactly B events, are
consumed by five runners, interleaved per repetition (the order rotates each
repetition) so that machine noise hits them alike:

  floor          bench/floor.c: next_batch / get_batch_events / finish_batch, no Lua
  pgqlua_noop    pgqlua run --once, process_event returns pgq.EVENT_OK
  python_noop    bench/py_consumer.py: a pgq.Consumer doing nothing per event
  pgqlua_insert  pgqlua run --once, one db:exec INSERT per event
  pgqlua_send    pgqlua run --once, the same INSERT with db:send (pipelined)
  python_insert  the pgq.Consumer with the same INSERT per event

The events are inserted once per (cluster, batch size); every runner of
every repetition has its own consumer, registered before the events went in,
so each one reads the very same batches.  Wall time is measured from process
start to exit (each runner exits when no batch is ready), peak RSS by GNU time
(package `time`).  Afterwards each consumer must be at the queue's last tick and, for
the INSERT runners, bench_sink (a normal, logged table, truncated before each
run) must hold N rows.  A CHECKPOINT runs before each timed run.

Instructions per event of pgqlua (and of the floor, for comparison) come from
valgrind --tool=callgrind: client-side instructions only, on a separate
queue of CG_N events, minus a run on the drained queue (start-up and one
empty poll).

Run with Debian's /usr/bin/python3 (psycopg2).
"""

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time

import psycopg2

RUNNERS = ["floor", "pgqlua_noop", "python_noop", "pgqlua_insert", "pgqlua_send", "python_insert"]
HERE = os.path.dirname(os.path.abspath(__file__))

TARGETS = [
    # (label, numerator, denominator, minimum)
    ("pgqlua_noop / floor", "pgqlua_noop", "floor", 0.85),
    ("pgqlua_noop / python_noop", "pgqlua_noop", "python_noop", 2.5),
    ("pgqlua_insert / python_insert", "pgqlua_insert", "python_insert", 2.0),
    ("pgqlua_send / python_insert", "pgqlua_send", "python_insert", 2.0),
]

NOOP_LUA = "function process_event() return pgq.EVENT_OK end\n"
INSERT_LUA = """function process_event(ev, db)
  db:exec("insert into bench_sink (id, data) values ($1, $2)", ev.id, ev.data)
  return pgq.EVENT_OK
end
"""
SEND_LUA = INSERT_LUA.replace("db:exec", "db:send")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def read_env(path):
    env = {}
    with open(path) as f:
        for tok in shlex.split(f.read()):
            if "=" in tok:
                k, v = tok.split("=", 1)
                env[k] = v
    return env


class Cluster:
    def __init__(self, name, envfile, work):
        e = read_env(envfile)
        self.name = name
        self.conninfo = "host=%s port=%s user=%s dbname=pgqlua_test" % (e["PGHOST"], e["PGPORT"], e["PGUSER"])
        self.work = os.path.join(work, name)
        os.makedirs(self.work, exist_ok=True)
        self.db = psycopg2.connect(self.conninfo)
        self.db.autocommit = True

    def sql(self, q, args=None):
        with self.db.cursor() as c:
            c.execute(q, args)
            return c.fetchall() if c.description else None

    def one(self, q, args=None):
        return self.sql(q, args)[0][0]


def consumer_name(runner, rep):
    return "%s_%d" % (runner, rep)


def fill_queue(cl, q, n, b, consumers):
    """(Re)create queue q with n events, one tick every b events, consumers registered first."""
    cl.sql("select pgq.unregister_consumer(queue_name, consumer_name)"
           " from pgq.get_consumer_info() where queue_name = %s", [q])
    cl.sql("select pgq.drop_queue(queue_name) from pgq.queue where queue_name = %s", [q])
    cl.sql("select pgq.create_queue(%s)", [q])
    cl.sql("select pgq.set_queue_config(%s, 'ticker_max_count', %s),"
           " pgq.set_queue_config(%s, 'ticker_max_lag', '1 hour'),"
           " pgq.set_queue_config(%s, 'ticker_idle_period', '1 hour')", [q, str(b), q, q])
    for c in consumers:
        cl.sql("select pgq.register_consumer(%s, %s)", [q, c])
    t0 = time.time()
    # One transaction per chunk of b events and a tick between chunks (a tick
    # sees only committed events).  The queue stays paused for pgqd (its
    # ticker racing ours would add empty batches); ours unpauses it inside
    # the chunk's transaction, so pgqd never sees it unpaused.
    cl.sql("select pgq.set_queue_config(%s, 'ticker_paused', 'true')", [q])
    cl.sql("""do $$
declare q text := %s; n int := %s; b int := %s;
begin
  for c in 0 .. (n + b - 1) / b - 1 loop
    perform pgq.set_queue_config(q, 'ticker_paused', 'false');
    perform pgq.ticker(q);
    perform pgq.set_queue_config(q, 'ticker_paused', 'true');
    perform pgq.insert_event(q, 'x', 'id=' || i || '&name=bench')
       from generate_series(c * b + 1, least(c * b + b, n)) i;
    commit;
  end loop;
end $$""" % (psycopg2.extensions.adapt(q).getquoted().decode(), n, b))
    cl.sql("select pgq.set_queue_config(%s, 'ticker_max_count', '1'),"
           " pgq.set_queue_config(%s, 'ticker_paused', 'false'), pgq.ticker(%s),"
           " pgq.set_queue_config(%s, 'ticker_paused', 'true')", [q, q, q, q])
    ticks = cl.one("select count(*) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue"
                   " where q.queue_name = %s", [q]) - 1
    log("  filled %s: %d events, %d ticks after the start, %.1fs" % (q, n, ticks, time.time() - t0))
    if ticks != (n + b - 1) // b:
        raise SystemExit("bench: queue %s has %d batches, expected %d" % (q, ticks, (n + b - 1) // b))


def drained(cl, q, c):
    return cl.one("select ci.last_tick = qi.last_tick_id from pgq.get_consumer_info(%s, %s) ci,"
                  " pgq.get_queue_info(%s) qi", [q, c, q])


def write_configs(cl, q, c, fetch):
    """Config files for the pgqlua and python runners of consumer c."""
    d = os.path.join(cl.work, q)
    os.makedirs(d, exist_ok=True)
    for name, text in (("noop.lua", NOOP_LUA), ("insert.lua", INSERT_LUA), ("send.lua", SEND_LUA)):
        p = os.path.join(d, name)
        if not os.path.exists(p):
            with open(p, "w") as f:
                f.write(text)
    script = "insert" if "insert" in c else "send" if "send" in c else "noop"
    y = os.path.join(d, c + ".yaml")
    with open(y, "w") as f:
        f.write('queue_name: %s\nconsumer_name: %s\ndb: "%s"\nscript: %s.lua\n'
                'log_level: warn\nfetch_size: %d\nstats_period: 0\n' % (q, c, cl.conninfo, script, fetch))
    ini = os.path.join(d, c + ".ini")
    with open(ini, "w") as f:
        f.write("[py_consumer]\njob_name = %s\nqueue_name = %s\nconsumer_name = %s\nsrc_db = %s\n"
                "bench_mode = %s\npgq_lazy_fetch = %d\nloop_delay = 0\nuse_skylog = 0\n"
                % (c, q, c, cl.conninfo, script, fetch))
    return y, ini


def command(args, cl, q, runner, c):
    y, ini = write_configs(cl, q, c, args.fetch)
    if runner == "floor":
        return [args.floor, cl.conninfo, q, c]
    if runner.startswith("pgqlua"):
        return [args.pgqlua, "run", "--once", y]
    if runner == "base_noop":
        return [args.base, "run", "--once", y]
    return ["/usr/bin/python3", os.path.join(HERE, "py_consumer.py"), "-q", ini]


def timed(cmd, outbase):
    """Run cmd; return (wall seconds from fork to exit, peak RSS in KiB, user s, sys s).

    Peak RSS comes from GNU time (package `time`): wait4() on a child forked
    from this Python process would count this process's RSS too (Linux keeps
    the high-water mark across execve)."""
    tfile = outbase + ".time"
    with open(outbase + ".out", "w") as o, open(outbase + ".err", "w") as e:
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", tfile] + cmd,
                           stdout=o, stderr=e, stdin=subprocess.DEVNULL)
        t1 = time.perf_counter()
    if p.returncode != 0:
        with open(outbase + ".err") as e:
            raise SystemExit("bench: %s exited %d: %s" % (" ".join(cmd), p.returncode, e.read()[-2000:]))
    with open(tfile) as f:
        rss, ut, st = f.read().split()[-3:]
    return t1 - t0, int(rss), float(ut), float(st)


def bench_size(args, cl, b, res):
    q = "bench_%d" % b
    consumers = [consumer_name(r, i) for i in range(args.reps) for r in RUNNERS]
    fill_queue(cl, q, args.n, b, consumers)
    runs = {r: [] for r in RUNNERS}
    for rep in range(args.reps):
        order = RUNNERS[rep % len(RUNNERS):] + RUNNERS[:rep % len(RUNNERS)]
        for runner in order:
            c = consumer_name(runner, rep)
            cmd = command(args, cl, q, runner, c)
            cl.sql("truncate bench_sink")
            cl.sql("checkpoint")
            wall, rss, ut, st = timed(cmd, os.path.join(cl.work, q, c))
            if not drained(cl, q, c):
                raise SystemExit("bench: %s did not drain %s" % (c, q))
            if "insert" in runner or "send" in runner:
                got = cl.one("select count(*) from bench_sink")
                if got != args.n:
                    raise SystemExit("bench: %s inserted %d rows, expected %d" % (c, got, args.n))
            runs[runner].append({"wall_s": round(wall, 4), "rss_kib": rss,
                                 "user_s": round(ut, 3), "sys_s": round(st, 3)})
            log("  %-6s B=%-6d rep %d %-14s %7.3fs %9.0f ev/s  RSS %6.1f MiB"
                % (cl.name, b, rep + 1, runner, wall, args.n / wall, rss / 1024))
    out = {}
    for r in RUNNERS:
        walls = [x["wall_s"] for x in runs[r]]
        med = statistics.median(walls)
        out[r] = {"runs": runs[r], "median_s": med, "events_per_s": round(args.n / med),
                  "peak_rss_kib": max(x["rss_kib"] for x in runs[r]),
                  "cpu_s_median": round(statistics.median(x["user_s"] + x["sys_s"] for x in runs[r]), 3)}
    ratios = {}
    for label, num, den, tgt in TARGETS:
        v = out[num]["events_per_s"] / out[den]["events_per_s"]
        ratios[label] = {"value": round(v, 3), "target": tgt, "met": v >= tgt}
    res[str(b)] = {"runners": out, "ratios": ratios}
    cl.sql("select pgq.unregister_consumer(queue_name, consumer_name)"
           " from pgq.get_consumer_info() where queue_name = %s", [q])
    cl.sql("select pgq.drop_queue(%s)", [q])


def callgrind_ir(cmd, outfile):
    """Instructions of the whole run: `pgqlua run` forks its worker from the
    supervising parent, so every process writes its own file (%p); their
    totals add up."""
    import glob
    for old in glob.glob(outfile + ".*"):
        os.remove(old)
    subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + outfile + ".%p"] + cmd,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    total, found = 0, 0
    for path in glob.glob(outfile + ".*"):
        with open(path) as f:
            for line in f:
                m = re.match(r"(summary|totals):\s+(\d+)", line)
                if m:
                    total += int(m.group(2))
                    found += 1
                    break
    if not found:
        raise SystemExit("bench: no totals in " + outfile + ".*")
    return total


def bench_callgrind(args, cl, sizes, resdir):
    cgdir = os.path.join(resdir, "callgrind")
    os.makedirs(cgdir, exist_ok=True)
    runners = [r for r in ("floor", "pgqlua_noop", "base_noop", "pgqlua_insert", "pgqlua_send") if r in RUNNERS]
    out = {"events": args.cg_n, "per_batch_size": {}, "startup_ir": {}}
    for b in sizes:
        q = "cg_%d" % b
        fill_queue(cl, q, args.cg_n, b, ["cg_" + r for r in runners])
        row = {}
        for r in runners:
            c = "cg_" + r
            cmd = command(args, cl, q, r, c)
            cl.sql("truncate bench_sink")
            total = callgrind_ir(cmd, os.path.join(cgdir, "%s_%s.%d.out" % (cl.name, r, b)))
            if r not in out["startup_ir"]:
                # the same runner on the drained queue: start-up + one empty poll
                out["startup_ir"][r] = callgrind_ir(cmd, os.path.join(cgdir, "%s_%s.empty.out" % (cl.name, r)))
            per = (total - out["startup_ir"][r]) / args.cg_n
            row[r] = {"total_ir": total, "ir_per_event": round(per, 1)}
            log("  callgrind B=%-6d %-14s %12d Ir  %8.1f Ir/event (start-up %d Ir)"
                % (b, r, total, per, out["startup_ir"][r]))
        out["per_batch_size"][str(b)] = row
        cl.sql("select pgq.unregister_consumer(queue_name, consumer_name)"
               " from pgq.get_consumer_info() where queue_name = %s", [q])
        cl.sql("select pgq.drop_queue(%s)", [q])
    return out


def print_table(results):
    n = results["meta"]["n"]
    for cname, cres in results["clusters"].items():
        print()
        print("== %s (%s), N=%d, median of %d runs ==" % (cname, results["meta"]["cluster_settings"][cname],
                                                          n, results["meta"]["reps"]))
        print("%7s  %-14s %10s %9s %9s %10s" % ("batch", "runner", "ev/s", "median s", "CPU s", "peak RSS"))
        for b, bres in cres.items():
            for r in RUNNERS:
                x = bres["runners"][r]
                print("%7s  %-14s %10d %9.3f %9.3f %7.1f MiB" % (b, r, x["events_per_s"], x["median_s"],
                                                                x["cpu_s_median"], x["peak_rss_kib"] / 1024))
            for label, v in bres["ratios"].items():
                print("%7s  %-32s %6.2f  (target >= %.2f: %s)" % ("", label, v["value"], v["target"],
                                                                  "met" if v["met"] else "MISSED"))
    cg = results.get("callgrind")
    if cg:
        print()
        print("== client instructions per event (callgrind, %d events, start-up subtracted) ==" % cg["events"])
        names = list(next(iter(cg["per_batch_size"].values())).keys())
        print("%7s  " % "batch" + " ".join("%15s" % r for r in names))
        for b, row in cg["per_batch_size"].items():
            print("%7s  " % b + " ".join("%15.0f" % row[r]["ir_per_event"] for r in names))
        print("start-up + one empty poll, Ir: " + ", ".join("%s %d" % kv for kv in cg["startup_ir"].items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cluster", action="append", required=True, metavar="NAME=ENVFILE=SETTINGS")
    ap.add_argument("--n", type=int, default=200000)
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--fetch", type=int, default=1000, help="pgqlua fetch_size = python pgq_lazy_fetch")
    ap.add_argument("--cg-n", type=int, default=50000, help="events for callgrind (0: skip)")
    ap.add_argument("--cg-cluster", default=None, help="cluster for callgrind (default: the first)")
    ap.add_argument("--runners", default=",".join(RUNNERS), help="a subset of the runners, comma separated")
    ap.add_argument("--pgqlua", required=True)
    ap.add_argument("--base", default=None,
                    help="another pgqlua binary (an older build): adds the runner base_noop, interleaved")
    ap.add_argument("--floor", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.base:
        RUNNERS.append("base_noop")
        TARGETS.append(("pgqlua_noop / base_noop", "pgqlua_noop", "base_noop", 0.95))
    wanted = args.runners.split(",") + (["base_noop"] if args.base else [])
    unknown = [r for r in wanted if r not in RUNNERS]
    if unknown:
        raise SystemExit("bench: unknown runner(s) %s (known: %s)" % (", ".join(unknown), ", ".join(RUNNERS)))
    RUNNERS[:] = [r for r in RUNNERS if r in wanted]
    TARGETS[:] = [t for t in TARGETS if t[1] in RUNNERS and t[2] in RUNNERS]

    clusters, settings = [], {}
    for spec in args.cluster:
        name, envfile, sett = spec.split("=", 2)
        clusters.append(Cluster(name, envfile, args.work))
        settings[name] = sett
    rev = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    results = {"meta": {"n": args.n, "reps": args.reps, "batch_sizes": sizes, "fetch_size": args.fetch,
                        "git": rev, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(),
                        "machine": platform.platform(), "cluster_settings": settings,
                        "server": clusters[0].one("select version()")},
               "clusters": {}}
    for cl in clusters:
        cl.sql("create table if not exists bench_sink (id bigint, data text)")
        # pgqlua's schema (failed-event table): pgqlua install on a throwaway queue
        y, _ = write_configs(cl, "bench_setup", "bench_setup", args.fetch)
        subprocess.run([args.pgqlua, "install", y], check=True, stdout=subprocess.DEVNULL)
        cl.sql("select pgq.unregister_consumer('bench_setup', 'bench_setup')")
        cl.sql("select pgq.drop_queue('bench_setup')")
    for cl in clusters:
        log("cluster %s (%s)" % (cl.name, settings[cl.name]))
        results["clusters"][cl.name] = {}
        for b in sizes:
            bench_size(args, cl, b, results["clusters"][cl.name])
    if args.cg_n > 0:
        cl = next((c for c in clusters if c.name == args.cg_cluster), clusters[0])
        log("callgrind on %s" % cl.name)
        results["callgrind"] = bench_callgrind(args, cl, sizes, os.path.dirname(os.path.abspath(args.out)))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    print_table(results)
    print()
    print("written: " + args.out)


if __name__ == "__main__":
    main()

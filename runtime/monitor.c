/*
 * monitor.c - consumer figures from pgq.get_consumer_info and the
 * failed-event table (see monitor.h), printed as a Nagios plugin or a munin
 * plugin.  A registered consumer that is not running shows as a growing
 * last_seen: it blocks PgQ's table rotation, so check flags it.
 */
#include "monitor.h"
#include "pgconn.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void query_target(const config *cfg, monitor_info *out)
{
	pgconn *t = pgconn_new(cfg->target_db, cfg->timezone);
	const char *p[2] = {cfg->queue_name, cfg->consumer_name};
	PGresult *res = NULL;
	char err[512];

	out->has_target = 1;
	out->target_batch = -1;
	if (!t || pgconn_connect(t, err, sizeof(err)) != 0 ||
	    !(res = pgconn_exec(t,
	                        "select batch_id, tick_id, extract(epoch from now() - completed_at)::float8"
	                        " from pgqlua.remote_batch where queue_name = $1 and consumer_name = $2",
	                        2, p, err, sizeof(err)))) {
		snprintf(out->target_error, sizeof(out->target_error), "%s", t ? err : "out of memory");
		goto done;
	}
	out->target_batch = 0;
	if (PQntuples(res) == 1) {
		out->target_batch = atoll(PQgetvalue(res, 0, 0));
		out->target_tick = atoll(PQgetvalue(res, 0, 1));
		out->target_age = atof(PQgetvalue(res, 0, 2));
	}
done:
	PQclear(res);
	pgconn_free(t);
}

int monitor_query(const config *cfg, monitor_info *out, int *unreachable, char *err, size_t errlen)
{
	pgconn *c = pgconn_new(cfg->db, cfg->timezone);
	const char *p[2] = {cfg->queue_name, cfg->consumer_name};
	PGresult *res = NULL;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	*unreachable = 0;
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (pgconn_connect(c, err, errlen) != 0) {
		*unreachable = 1;
		goto done;
	}
	res = pgconn_exec(c,
	                  /* both are now() minus a time the consumer's own transaction set:
	                   * slightly negative when that began after ours */
	                  "select greatest(extract(epoch from c.lag), 0)::float8,"
	                  " greatest(extract(epoch from c.last_seen), 0)::float8,"
	                  " c.pending_events, c.last_tick, coalesce(c.current_batch, 0),"
	                  " case when to_regclass('pgqlua.failed_event') is null then -1 else"
	                  "  (select count(*) from pgqlua.failed_event f"
	                  "    where f.queue_name = $1 and f.consumer_name = $2) end"
	                  " from pgq.get_consumer_info() c"
	                  " where c.queue_name = $1 and c.consumer_name = $2",
	                  2, p, err, errlen);
	if (!res)
		goto done;
	if (PQntuples(res) == 1) {
		out->registered = 1;
		out->lag = atof(PQgetvalue(res, 0, 0));
		out->last_seen = atof(PQgetvalue(res, 0, 1));
		out->pending = atoll(PQgetvalue(res, 0, 2));
		out->last_tick = atoll(PQgetvalue(res, 0, 3));
		out->current_batch = atoll(PQgetvalue(res, 0, 4));
		out->failed = atoll(PQgetvalue(res, 0, 5));
	}
	rc = 0;
	if (cfg->target_db)
		query_target(cfg, out);
done:
	PQclear(res);
	pgconn_free(c);
	return rc;
}

static double check_timeout;

static void on_alarm(int sig)
{
	static const char msg[] = "PGQLUA UNKNOWN - timed out\n";
	(void)sig;
	(void)!write(1, msg, sizeof(msg) - 1);
	_exit(3);
}

static int parse_number(const char *opt, const char *v, double *out)
{
	char *end;
	if (!v) {
		printf("PGQLUA UNKNOWN - %s needs a value\n", opt);
		return -1;
	}
	*out = strtod(v, &end);
	if (end == v || *end || *out < 0) {
		printf("PGQLUA UNKNOWN - %s: \"%s\" is not a non-negative number\n", opt, v);
		return -1;
	}
	return 0;
}

int monitor_check(const config *cfg, int argc, const char *const *argv)
{
	static const char *const names[] = {"OK", "WARNING", "CRITICAL", "UNKNOWN"};
	double warn = 300, crit = 900, fwarn = 1, fcrit = 0;
	monitor_info m;
	char err[1024], why[1024] = "";
	int unreachable, st = 0;

	check_timeout = 10;
	for (int i = 0; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		double *dst = !strcmp(o, "-w") || !strcmp(o, "--warning")    ? &warn
		              : !strcmp(o, "-c") || !strcmp(o, "--critical") ? &crit
		              : !strcmp(o, "--failed-warn")                  ? &fwarn
		              : !strcmp(o, "--failed-crit")                  ? &fcrit
		              : !strcmp(o, "-t") || !strcmp(o, "--timeout")  ? &check_timeout
		                                                             : NULL;
		if (!dst) {
			printf("PGQLUA UNKNOWN - unknown option \"%s\" (use -w, -c, --failed-warn, --failed-crit, -t)\n", o);
			return 3;
		}
		if (parse_number(o, v, dst) != 0)
			return 3;
		i++;
	}
	if (check_timeout > 0) {
		signal(SIGALRM, on_alarm);
		alarm((unsigned)(check_timeout + 0.999));
	}
	if (monitor_query(cfg, &m, &unreachable, err, sizeof(err)) != 0) {
		printf("PGQLUA UNKNOWN - %s\n", err);
		return 3;
	}
	alarm(0);
	if (!m.registered) {
		printf("PGQLUA CRITICAL - consumer %s is not registered on queue %s\n", cfg->consumer_name,
		       cfg->queue_name);
		return 2;
	}
	{
		int lag_st = m.lag >= crit ? 2 : m.lag >= warn ? 1 : 0;
		int seen_st = m.last_seen >= crit ? 2 : m.last_seen >= warn ? 1 : 0;
		int fail_st = fcrit > 0 && m.failed >= fcrit ? 2 : fwarn > 0 && m.failed >= fwarn ? 1 : 0;
		size_t n = 0;
		st = lag_st > seen_st ? lag_st : seen_st;
		/* a stopped consumer makes both grow: say what it means */
		if (seen_st)
			n += (size_t)snprintf(why + n, sizeof(why) - n,
			                      "not consuming: last batch %.0fs ago (a stopped consumer blocks PgQ's table rotation)",
			                      m.last_seen);
		else if (lag_st)
			n += (size_t)snprintf(why + n, sizeof(why) - n, "lag %.0fs", m.lag);
		if (fail_st) {
			snprintf(why + n, sizeof(why) - n, "%s%lld failed events", n ? "; " : "", m.failed);
			if (fail_st > st)
				st = fail_st;
		}
	}
	if (m.has_target) {
		size_t n = strlen(why);
		if (m.target_batch < 0) {
			snprintf(why + n, sizeof(why) - n, "%starget unreachable: %s", n ? "; " : "", m.target_error);
			st = st > 1 ? st : 2;
		} else
			snprintf(why + n, sizeof(why) - n, "%starget at batch %lld (tick %lld), source at tick %lld",
			         n ? "; " : "", m.target_batch, m.target_tick, m.last_tick);
	}
	printf("PGQLUA %s - consumer %s on queue %s: %s%slag %.1fs, last seen %.1fs ago, %lld pending, %lld failed"
	       "|lag=%.3fs;%g;%g last_seen=%.3fs;%g;%g pending=%lld failed=%lld;%g;%g\n",
	       names[st], cfg->consumer_name, cfg->queue_name, why, why[0] ? "; " : "", m.lag, m.last_seen,
	       m.pending, m.failed < 0 ? 0 : m.failed, m.lag, warn, crit, m.last_seen, warn, crit, m.pending,
	       m.failed < 0 ? 0 : m.failed, fwarn, fcrit);
	return st;
}

int monitor_munin(const config *cfg, const char *mode)
{
	monitor_info m;
	char err[1024];
	int unreachable;

	if (mode && strcmp(mode, "config") == 0) {
		printf("graph_title pgqlua consumer %s on queue %s\n"
		       "graph_category pgq\n"
		       "graph_vlabel seconds / events\n"
		       "graph_args --base 1000 --lower-limit 0\n"
		       "graph_info Lag and last batch age of a PgQ consumer run by pgqlua, its pending and failed events.\n"
		       "lag.label lag (s)\nlag.info seconds since the last tick the consumer finished\n"
		       "last_seen.label last seen (s)\nlast_seen.info seconds since the consumer last took a batch\n"
		       "pending.label pending events\npending.info events after the consumer's position\n"
		       "failed.label failed events\nfailed.info events in pgqlua.failed_event\n",
		       cfg->consumer_name, cfg->queue_name);
		return 0;
	}
	if (mode && strcmp(mode, "autoconf") == 0) {
		if (monitor_query(cfg, &m, &unreachable, err, sizeof(err)) != 0)
			printf("no (%s)\n", err);
		else if (!m.registered)
			printf("no (consumer %s is not registered on queue %s)\n", cfg->consumer_name, cfg->queue_name);
		else
			printf("yes\n");
		return 0;
	}
	if (mode && *mode) {
		fprintf(stderr, "pgqlua: munin: unknown argument \"%s\" (use config or autoconf)\n", mode);
		return 64;
	}
	if (monitor_query(cfg, &m, &unreachable, err, sizeof(err)) != 0) {
		fprintf(stderr, "pgqlua: %s\n", err);
		printf("lag.value U\nlast_seen.value U\npending.value U\nfailed.value U\n");
		return 69;
	}
	if (!m.registered) {
		printf("lag.value U\nlast_seen.value U\npending.value U\nfailed.value U\n");
		return 0;
	}
	printf("lag.value %.3f\nlast_seen.value %.3f\npending.value %lld\nfailed.value %lld\n", m.lag,
	       m.last_seen, m.pending, m.failed < 0 ? 0 : m.failed);
	return 0;
}

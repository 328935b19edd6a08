/*
 * monitor.c - consumer figures from pgq.get_consumer_info and the
 * failed-event table (see monitor.h), printed as a Nagios plugin or a munin
 * plugin.  A registered consumer that is not running shows as a growing
 * last_seen: it blocks PgQ's table rotation, so check flags it.
 */
#include "monitor.h"
#include "group.h"
#include "group_layout.h"
#include "pgconn.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The target's last completed batch: the consumer's, or a group's
 * partition furthest behind (each partition's tick in out->parts; 0:
 * none completed yet).  cfg has the group's current partition count. */
static void query_target(const config *cfg, monitor_info *out)
{
	pgconn *t = pgconn_new(cfg->target_db, cfg->timezone);
	char *names = group_names_array(cfg), err[512];
	const char *p[2] = {cfg->queue_name, names};
	PGresult *res = NULL;
	int rows;

	out->has_target = 1;
	out->target_batch = -1;
	if (!t || !names || pgconn_connect(t, err, sizeof(err)) != 0 ||
	    !(res = pgconn_exec(t,
	                        "select r.batch_id, r.tick_id, extract(epoch from now() - r.completed_at)::float8, p.i - 1"
	                        " from unnest($2::text[]) with ordinality p(name, i)"
	                        " join pgqlua.remote_batch r on r.queue_name = $1 and r.consumer_name = p.name"
	                        " order by r.tick_id, p.i",
	                        2, p, err, sizeof(err)))) {
		snprintf(out->target_error, sizeof(out->target_error), "%s", t && names ? err : "out of memory");
		goto done;
	}
	out->target_batch = 0;
	rows = PQntuples(res);
	/* a partition without a row has completed nothing: the group's is 0 */
	if (rows > 0 && rows == (out->nparts > 0 ? out->nparts : 1)) {
		out->target_batch = atoll(PQgetvalue(res, 0, 0));
		out->target_tick = atoll(PQgetvalue(res, 0, 1));
		out->target_age = atof(PQgetvalue(res, 0, 2));
	}
	for (int r = 0; r < rows && out->nparts > 0; r++) {
		int i = atoi(PQgetvalue(res, r, 3));
		if (i >= 0 && i < out->nparts)
			out->parts[i].target_tick = atoll(PQgetvalue(res, r, 1));
	}
done:
	free(names);
	PQclear(res);
	pgconn_free(t);
}

void monitor_info_free(monitor_info *m)
{
	free(m->parts);
	m->parts = NULL;
	m->nparts = 0;
}

/* A resize under way or interrupted (pgqlua.group_layout; nothing when
 * the table is not there). */
static void query_resize(pgconn *c, const config *cfg, monitor_info *out)
{
	const char *p[2] = {cfg->queue_name, cfg->consumer_name};
	char err[256];
	PGresult *res = pgconn_exec(c,
	                            "select coalesce(l.resizing_to, 0), l.paused_by_resize and q.queue_ticker_paused"
	                            " from pgqlua.group_layout l join pgq.queue q on q.queue_name = l.queue_name"
	                            " where l.queue_name = $1 and l.consumer_name = $2",
	                            2, p, err, sizeof(err));
	if (res && PQntuples(res) == 1) {
		out->resize_to = atoi(PQgetvalue(res, 0, 0));
		out->resize_paused = PQgetvalue(res, 0, 1)[0] == 't';
	}
	PQclear(res);
}

/* A group: each partition's PgQ figures and owner, summed up in out. */
static int query_group(pgconn *c, const config *cfg, monitor_info *out, char *err, size_t errlen)
{
	char *arr = group_names_array(cfg);
	const char *p[2] = {cfg->queue_name, arr};
	PGresult *res;
	group_view v;
	int n = cfg->partitions, regs = 0;
	size_t used = 0;

	if (!arr || !(out->parts = calloc((size_t)n, sizeof(monitor_part)))) {
		free(arr);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	out->nparts = n;
	res = pgconn_exec(c,
	                  "select p.i - 1, c.consumer_name is not null,"
	                  " greatest(extract(epoch from c.lag), 0)::float8,"
	                  " greatest(extract(epoch from c.last_seen), 0)::float8,"
	                  " coalesce(c.pending_events, 0), coalesce(c.last_tick, 0)"
	                  " from unnest($2::text[]) with ordinality p(name, i)"
	                  " left join (select * from pgq.get_consumer_info() where queue_name = $1) c"
	                  "  on c.consumer_name = p.name order by 1",
	                  2, p, err, errlen);
	free(arr);
	if (!res)
		return -1;
	for (int r = 0; r < PQntuples(res) && r < n; r++) {
		monitor_part *mp = &out->parts[r];
		long long tick = atoll(PQgetvalue(res, r, 5));
		mp->registered = PQgetvalue(res, r, 1)[0] == 't';
		mp->lag = atof(PQgetvalue(res, r, 2));
		mp->last_seen = atof(PQgetvalue(res, r, 3));
		mp->pending = atoll(PQgetvalue(res, r, 4));
		regs += mp->registered;
		if (mp->lag > out->lag)
			out->lag = mp->lag;
		if (mp->last_seen > out->last_seen)
			out->last_seen = mp->last_seen;
		out->pending += mp->pending;
		if (mp->registered && (out->last_tick == 0 || tick < out->last_tick))
			out->last_tick = tick;
	}
	PQclear(res);
	out->registered = regs == n;
	if (group_view_read(c, cfg, &v, err, errlen) != 0)
		return -1;
	for (int i = 0; i < n; i++) {
		if (v.owner[i])
			snprintf(out->parts[i].owner, sizeof(out->parts[i].owner), "%s", v.owner[i]);
		else
			out->unowned++;
	}
	out->nmembers = v.nmembers;
	query_resize(c, cfg, out);
	for (int m = 0; m < v.nmembers && used < sizeof(out->members); m++) {
		int w = snprintf(out->members + used, sizeof(out->members) - used, "%s%s", m ? ", " : "", v.members[m]);
		if (w < 0)
			break;
		used += (size_t)w;
	}
	group_view_free(&v);
	return 0;
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
	if (cfg->partitions > 0) {
		/* the group's partitions as they are now (a resize may have
		 * changed the config's count) */
		config now = *cfg;
		if (group_layout_read(c, cfg, &now.partitions, err, errlen) != 0)
			goto done;
		rc = query_group(c, &now, out, err, errlen);
		if (rc == 0 && !(res = pgconn_exec(c,
		                                   "select case when to_regclass('pgqlua.failed_event') is null then -1 else"
		                                   " (select count(*) from pgqlua.failed_event f"
		                                   "  where f.queue_name = $1 and f.consumer_name = $2) end",
		                                   2, p, err, errlen)))
			rc = -1;
		if (rc == 0)
			out->failed = atoll(PQgetvalue(res, 0, 0));
		if (rc == 0 && cfg->target_db)
			query_target(&now, out);
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
	if (rc != 0)
		monitor_info_free(out);
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

/* The state of one consumer's (or partition's) lag and last batch age;
 * what it means goes into why (appended). */
static int check_figures(double lag, double last_seen, double warn, double crit, char *why, size_t len)
{
	int lag_st = lag >= crit ? 2 : lag >= warn ? 1 : 0;
	int seen_st = last_seen >= crit ? 2 : last_seen >= warn ? 1 : 0;
	size_t n = strlen(why);
	/* a stopped consumer makes both grow: say what it means */
	if (seen_st)
		snprintf(why + n, len - n, "%snot consuming: last batch %.0fs ago (a stopped consumer blocks PgQ's table rotation)",
		         n ? "; " : "", last_seen);
	else if (lag_st)
		snprintf(why + n, len - n, "%slag %.0fs", n ? "; " : "", lag);
	return lag_st > seen_st ? lag_st : seen_st;
}

/* A group: each partition on its own (the worst one decides), and a
 * partition that no member holds is consumed by nobody: CRITICAL. */
static int check_group(const config *cfg, const monitor_info *m, double warn, double crit, char *why, size_t len)
{
	int st = 0, lagging = 0;
	size_t n;
	for (int i = 0; i < m->nparts; i++) {
		const monitor_part *mp = &m->parts[i];
		int pst = mp->lag >= crit || mp->last_seen >= crit ? 2 : mp->lag >= warn || mp->last_seen >= warn ? 1 : 0;
		if (!pst)
			continue;
		n = strlen(why);
		snprintf(why + n, len - n, "%spartition %s.p%dof%d %s %.0fs", lagging ? ", " : "", cfg->consumer_name, i,
		         m->nparts, mp->last_seen >= mp->lag ? "took no batch for" : "lags",
		         mp->last_seen >= mp->lag ? mp->last_seen : mp->lag);
		lagging++;
		st = pst > st ? pst : st;
	}
	if (m->unowned > 0) {
		n = strlen(why);
		snprintf(why + n, len - n, "%s%d of %d partitions have no owner (%d members)", n ? "; " : "", m->unowned,
		         m->nparts, m->nmembers);
		st = 2;
	}
	return st;
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
		monitor_info_free(&m);
		return 2;
	}
	st = m.nparts > 0 ? check_group(cfg, &m, warn, crit, why, sizeof(why))
	                  : check_figures(m.lag, m.last_seen, warn, crit, why, sizeof(why));
	{
		size_t n = strlen(why);
		int fail_st = fcrit > 0 && m.failed >= fcrit ? 2 : fwarn > 0 && m.failed >= fwarn ? 1 : 0;
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
	monitor_info_free(&m);
	return st;
}

/* A group's fields: each partition's lag and pending events. */
static void munin_part_config(const config *cfg, int nparts)
{
	for (int i = 0; i < nparts; i++)
		printf("p%d_lag.label %s.p%dof%d lag (s)\np%d_lag.info seconds since the last tick partition %d finished\n"
		       "p%d_pending.label %s.p%dof%d pending\np%d_pending.info events after partition %d's position\n",
		       i, cfg->consumer_name, i, nparts, i, i, i, cfg->consumer_name, i, nparts, i, i);
}

static void munin_unknown(int nparts)
{
	printf("lag.value U\nlast_seen.value U\npending.value U\nfailed.value U\n");
	for (int i = 0; i < nparts; i++)
		printf("p%d_lag.value U\np%d_pending.value U\n", i, i);
}

int monitor_munin(const config *cfg, const char *mode)
{
	monitor_info m;
	char err[1024];
	int unreachable, nparts = cfg->partitions;

	if (mode && strcmp(mode, "config") == 0) {
		/* a group's partitions as the database has them (a resize changes
		 * their number), else as the config says */
		if (cfg->partitions > 0 && monitor_query(cfg, &m, &unreachable, err, sizeof(err)) == 0) {
			nparts = m.nparts;
			monitor_info_free(&m);
		}
		printf("graph_title pgqlua consumer %s on queue %s\n"
		       "graph_category pgq\n"
		       "graph_vlabel seconds / events\n"
		       "graph_args --base 1000 --lower-limit 0\n"
		       "graph_info Lag and last batch age of a PgQ consumer run by pgqlua, its pending and failed events%s.\n"
		       "lag.label lag (s)\nlag.info seconds since the last tick the consumer finished%s\n"
		       "last_seen.label last seen (s)\nlast_seen.info seconds since the consumer last took a batch\n"
		       "pending.label pending events\npending.info events after the consumer's position\n"
		       "failed.label failed events\nfailed.info events in pgqlua.failed_event\n",
		       cfg->consumer_name, cfg->queue_name, nparts > 0 ? "; a group: each partition's lag and pending events" : "",
		       nparts > 0 ? " (the partition furthest behind)" : "");
		munin_part_config(cfg, nparts);
		return 0;
	}
	if (mode && strcmp(mode, "autoconf") == 0) {
		if (monitor_query(cfg, &m, &unreachable, err, sizeof(err)) != 0)
			printf("no (%s)\n", err);
		else if (!m.registered)
			printf("no (consumer %s is not registered on queue %s)\n", cfg->consumer_name, cfg->queue_name);
		else
			printf("yes\n");
		monitor_info_free(&m);
		return 0;
	}
	if (mode && *mode) {
		fprintf(stderr, "pgqlua: munin: unknown argument \"%s\" (use config or autoconf)\n", mode);
		return 64;
	}
	if (monitor_query(cfg, &m, &unreachable, err, sizeof(err)) != 0) {
		fprintf(stderr, "pgqlua: %s\n", err);
		munin_unknown(nparts);
		return 69;
	}
	if (!m.registered) {
		munin_unknown(m.nparts);
		monitor_info_free(&m);
		return 0;
	}
	printf("lag.value %.3f\nlast_seen.value %.3f\npending.value %lld\nfailed.value %lld\n", m.lag,
	       m.last_seen, m.pending, m.failed < 0 ? 0 : m.failed);
	for (int i = 0; i < m.nparts; i++)
		printf("p%d_lag.value %.3f\np%d_pending.value %lld\n", i, m.parts[i].lag, i, m.parts[i].pending);
	monitor_info_free(&m);
	return 0;
}

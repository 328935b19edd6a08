/*
 * peek.c - `pgqlua peek` (see peek.h): PgQ's next_batch for the consumer
 * (or each partition), the batch's events through the consumer's filter,
 * finish_batch to walk on, and everything rolled back at the end.
 */
#include "peek.h"
#include "exitcode.h"
#include "group.h"
#include "pgq.h"
#include "service.h"

#include <stdlib.h>
#include <string.h>

#define PEEK_DATA_CHARS 60
#define PEEK_MAX_BATCHES 10000   /* empty ticks walked at most, per consumer */

/* part: the partition in a group, -1 ungrouped */
static void peek_row(FILE *out, const PGresult *res, int i, int json, int part)
{
	/* ev_id, ev_time, ev_type, ev_extra1, the start of ev_data, its length, ev_retry */
	const char *v[7];
	for (int k = 0; k < 7; k++)
		v[k] = PQgetisnull(res, i, k) ? NULL : PQgetvalue(res, i, k);
	if (!json) {
		fprintf(out, "%s | %s | %s | %s | %s%s\n", v[0], v[1], v[2] ? v[2] : "", v[3] ? v[3] : "",
		        v[4] ? v[4] : "", v[5] && atol(v[5]) > PEEK_DATA_CHARS ? "..." : "");
		return;
	}
	fprintf(out, "{\"id\":%s,", v[0]);
	if (part >= 0)
		fprintf(out, "\"partition\":%d,", part);
	fputs("\"time\":", out);
	service_json_str(out, v[1]);
	for (int k = 2; k <= 4; k++) {
		static const char *const names[] = {"", "", "type", "extra1", "data"};
		fprintf(out, ",\"%s\":", names[k]);
		if (v[k])
			service_json_str(out, v[k]);
		else
			fputs("null", out);
	}
	fprintf(out, ",\"data_length\":%s,\"retry\":%s}\n", v[5] ? v[5] : "null", v[6] ? v[6] : "0");
}

/* One batch's events through where, up to limit; the number shown or -1. */
static int show_batch(pgconn *c, const pgq_batch *b, const char *where, int limit, int json, int part, FILE *out,
                      char *err, size_t errlen)
{
	size_t n = strlen(b->sql) + (where ? strlen(where) : 0) + 256;
	char *sql = malloc(n), lim[24];
	const char *params[1] = {lim};
	PGresult *res;
	int shown;

	if (!sql) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	/* the filter's newlines end its `--` comments */
	snprintf(sql, n, "select ev_id, ev_time, ev_type, ev_extra1, left(ev_data, %d), length(ev_data), ev_retry"
	         " from (%s) b%s%s%s order by ev_id limit $1::int4", PEEK_DATA_CHARS, b->sql,
	         where ? " where (\n" : "", where ? where : "", where ? "\n)" : "");
	snprintf(lim, sizeof(lim), "%d", limit);
	res = pgconn_exec(c, sql, 1, params, err, errlen);
	free(sql);
	if (!res)
		return -1;
	for (int i = 0; i < PQntuples(res); i++)
		peek_row(out, res, i, json, part);
	shown = PQntuples(res);
	PQclear(res);
	return shown;
}

/* peek runs beside the consumer: a member may finish the batch that
 * pgq.next_batch_custom has just returned before pgq.batch_event_sql reads
 * it (PgQ then cannot find it).  That batch is done; ask again. */
#define PEEK_TRIES 5

static int finished_meanwhile(const char *err)
{
	return strstr(err, "Cannot find data for batch") || strstr(err, "batch not found");
}

static pgq_result next_batch_settled(pgconn *c, const config *cfg, const char *name, const pgq_batch_knobs *k,
                                     pgq_batch *b, char *err, size_t errlen)
{
	for (int i = 1;; i++) {
		pgq_result r;
		if (pgconn_cmd(c, "savepoint pgqlua_peek", err, errlen) != 0)
			return PGQ_ERROR;
		r = pgq_next_batch(c, cfg->queue_name, name, k, b, err, errlen);
		if (r != PGQ_ERROR || i >= PEEK_TRIES || !finished_meanwhile(err))
			return r;
		if (pgconn_cmd(c, "rollback to savepoint pgqlua_peek", err, errlen) != 0)
			return PGQ_ERROR;
	}
}

/* The next events of one PgQ consumer (the consumer or partition `part`):
 * the number shown, or -1 with err. */
static int peek_one(pgconn *c, const config *cfg, int part, int limit, int json, FILE *out, char *err,
                    size_t errlen)
{
	pgq_batch_knobs k = {cfg->batch_min_count, cfg->batch_min_interval, cfg->batch_min_lag};
	char *name = group_part_name(cfg, part < 0 ? 0 : part), *where, bid[24];
	const char *params[1] = {bid};
	int shown = 0, batches = 0, oom = 0, n;
	pgq_batch b;

	memset(&b, 0, sizeof(b));
	where = group_part_where(cfg, part < 0 ? 0 : part, &oom);
	if (!name || oom) {
		snprintf(err, errlen, "out of memory");
		shown = -1;
		goto out;
	}
	while (shown < limit && batches++ < PEEK_MAX_BATCHES) {
		PGresult *res;
		pgq_result r = next_batch_settled(c, cfg, name, &k, &b, err, errlen);
		if (r == PGQ_NONE)
			break;
		if (r != PGQ_DONE || (n = show_batch(c, &b, where, limit - shown, json, part, out, err, errlen)) < 0) {
			shown = -1;
			goto out;
		}
		shown += n;
		snprintf(bid, sizeof(bid), "%lld", b.batch_id);
		if (!(res = pgconn_exec(c, "select pgq.finish_batch($1::int8)", 1, params, err, errlen))) {
			shown = -1;
			goto out;
		}
		PQclear(res);
		free(b.sql);
		b.sql = NULL;
	}
out:
	free(b.sql);
	free(name);
	free(where);
	return shown;
}

int peek_show(pgconn *c, const config *cfg, int limit, int json, FILE *out)
{
	char err[PGCONN_ERR_LEN], *first = group_part_name(cfg, 0);
	int rc = EXIT_DB, grouped = cfg->partitions > 0, n = group_size(cfg), shown = 0;
	pgq_result r;

	if (!first) {
		fprintf(stderr, "pgqlua: peek: out of memory\n");
		return EXIT_INTERNAL;
	}
	r = pgq_check_registered(c, cfg->queue_name, first, err, sizeof(err));
	free(first);
	if (r != PGQ_DONE || pgconn_cmd(c, "begin; set local lock_timeout = '10s'", err, sizeof(err)) != 0)
		goto fail;
	if (!json && !grouped)
		fprintf(out, "ev_id | time | type | extra1 | data\n");
	for (int i = 0; i < n; i++) {
		int got;
		if (!json && grouped) {
			char *name = group_part_name(cfg, i);
			fprintf(out, "partition %d (%s):\nev_id | time | type | extra1 | data\n", i, name ? name : "?");
			free(name);
		}
		if ((got = peek_one(c, cfg, grouped ? i : -1, limit, json, out, err, sizeof(err))) < 0)
			goto fail;
		shown += got;
		if (!json && grouped)
			fprintf(out, "(%d event%s)\n", got, got == 1 ? "" : "s");
	}
	if (!json)
		fprintf(out, "(%d event%s%s%s)\n", shown, shown == 1 ? "" : "s", grouped ? " in all" : "",
		        shown == 0 ? ": no batch is ready for this consumer" : "");
	rc = EXIT_OK_;
	goto out;
fail:
	fprintf(stderr, "pgqlua: peek: %s\n", err);
out:
	pgq_rollback(c);
	return rc;
}

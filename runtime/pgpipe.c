/*
 * pgpipe.c - prepared statements and the pipeline of a pgconn (see
 * pgconn.h): pgconn_pipe_send, pgconn_pipe_drain, pgconn_exec_after and
 * pgconn_set_prepare.  Called by ldbwin.c, ldb.c and pgq.c.
 */
#include "pgconn_int.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- prepared statements and the pipeline ----
 * With pgconn_set_prepare, every statement sent through the pipeline is
 * kept prepared (named pgqlua_<n>, up to STMT_MAX of them): the server
 * parses and plans it once per connection.  A Parse goes out in the same
 * pipeline as the statement's first execution; its slot is freed again if
 * the Parse failed or was skipped, or if the statement no longer fits its
 * plan (a table changed under a SELECT *); a new name is used next time.
 * Each command in the pipeline is tracked, so that results can be read
 * back in order. */

void pgconn_set_prepare(pgconn *c, int on)
{
	c->prepare = on;
}

static unsigned long hash_sql(const char *s)
{
	unsigned long h = 1469598103934665603ul;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ul;
	return h;
}

/* The slot of sql, adding it (*added) if there is room; -1 if none. */
static int stmt_slot(pgconn *c, const char *sql, int *added)
{
	unsigned long h = hash_sql(sql);
	int free_slot = -1, last = c->last_slot;
	*added = 0;
	/* a script sends the same statement event after event */
	if (c->stmts[last].sql && c->stmts[last].hash == h && strcmp(c->stmts[last].sql, sql) == 0)
		return last;
	for (int i = 0; i < STMT_MAX; i++) {
		if (!c->stmts[i].sql) {
			if (free_slot < 0)
				free_slot = i;
		} else if (c->stmts[i].hash == h && strcmp(c->stmts[i].sql, sql) == 0)
			return c->last_slot = i;
	}
	if (free_slot < 0 || !(c->stmts[free_slot].sql = strdup(sql)))
		return -1;
	c->stmts[free_slot].hash = h;
	c->stmts[free_slot].id = ++c->next_id;
	*added = 1;
	return c->last_slot = free_slot;
}

static int seg_push(pgconn *c, int slot, int parse)
{
	if (c->nseg == c->capseg) {
		int n = c->capseg ? c->capseg * 2 : 64;
		int *ns = realloc(c->seg_slot, sizeof(int) * (size_t)n);
		unsigned char *np;
		if (!ns)
			return -1;
		c->seg_slot = ns;
		if (!(np = realloc(c->seg_parse, (size_t)n)))
			return -1;
		c->seg_parse = np;
		c->capseg = n;
	}
	c->seg_slot[c->nseg] = slot;
	c->seg_parse[c->nseg] = (unsigned char)parse;
	c->nseg++;
	return 0;
}

/* Queue one statement (pipeline mode on): its Parse first when it is new
 * and may be prepared.  Returns the number of commands queued (1 or 2),
 * or -1. */
static int send_stmt(pgconn *c, const char *sql, int nparams, const char *const *params, int prepare)
{
	char name[32];
	int added = 0, slot = prepare && c->prepare ? stmt_slot(c, sql, &added) : -1;

	if (slot < 0) {
		if (!PQsendQueryParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0) || seg_push(c, -1, 0) != 0)
			return -1;
		return 1;
	}
	snprintf(name, sizeof(name), "pgqlua_%ld", c->stmts[slot].id);
	if (added && (!PQsendPrepare(c->pg, name, sql, nparams, NULL) || seg_push(c, slot, 1) != 0)) {
		pgconn_stmt_forget(c, slot);
		return -1;
	}
	if (!PQsendQueryPrepared(c->pg, name, nparams, params, NULL, NULL, 0) || seg_push(c, slot, 0) != 0)
		return -1;
	return added ? 2 : 1;
}

/* What a command's result says about its prepared statement. */
static void seg_result(pgconn *c, int i, ExecStatusType st, const PGresult *res)
{
	int slot = c->seg_slot[i];
	const char *state;
	if (slot < 0 || !c->stmts[slot].sql)
		return;
	if (c->seg_parse[i]) {
		if (st != PGRES_COMMAND_OK)
			pgconn_stmt_forget(c, slot);   /* failed or skipped: maybe not there */
		return;
	}
	state = st == PGRES_FATAL_ERROR ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	/* 0A000: the plan's result type changed */
	if (state && strcmp(state, "0A000") == 0)
		pgconn_stmt_forget(c, slot);
	/* 26000: it is gone, and so may be the others (DEALLOCATE ALL) */
	if (state && strcmp(state, "26000") == 0)
		for (int k = 0; k < STMT_MAX; k++)
			pgconn_stmt_forget(c, k);
}

int pgconn_pipe_send(pgconn *c, const char *sql, int nparams, const char *const *params, int prepare)
{
	if (!c->pg)
		return -1;
	if (PQpipelineStatus(c->pg) == PQ_PIPELINE_OFF) {
		pgconn_settle(c);
		if (!PQenterPipelineMode(c->pg))
			return -1;
		c->nseg = 0;
	}
	return send_stmt(c, sql, nparams, params, prepare);
}

/* Sync and read the result of every command sent since the last sync.
 * keep >= 0: that command's result is returned in *kept if it succeeded.
 * *failed_at: the first command that failed, or -1 (err says why).
 * Returns 0, or -1 with err when the connection failed. */
static int pipe_finish(pgconn *c, int keep, PGresult **kept, int *failed_at, char *err, size_t errlen)
{
	PGresult *res;
	int got = 0, broken = 0, n = c->nseg;

	*failed_at = -1;
	if (kept)
		*kept = NULL;
	if (!PQpipelineSync(c->pg)) {
		pgconn_result_error(c, NULL, err, errlen);
		return -1;
	}
	/* one result, then NULL, per command; then the sync's result */
	while (got < n) {
		ExecStatusType st;
		res = PQgetResult(c->pg);
		if (res == NULL) {
			got++;
			continue;
		}
		st = PQresultStatus(res);
		seg_result(c, got, st, res);
		if (pgconn_is_copy(st)) {
			if (*failed_at < 0) {
				*failed_at = got;
				snprintf(err, errlen, PGCONN_COPY_REFUSED);
			}
			if (pgconn_refuse_copy(c, st) != 0)
				broken = 1;
		} else if (*failed_at < 0 && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
			*failed_at = got;
			pgconn_result_error(c, res, err, errlen);
		} else if (got == keep && *failed_at < 0 && kept && !*kept) {
			*kept = res;
			res = NULL;
		}
		PQclear(res);
		if (broken || !c->pg || PQstatus(c->pg) != CONNECTION_OK) {
			broken = 1;
			break;
		}
	}
	c->nseg = 0;
	while (!broken && (res = PQgetResult(c->pg)) != NULL) {
		ExecStatusType st = PQresultStatus(res);
		PQclear(res);
		if (st == PGRES_PIPELINE_SYNC)
			break;
		if (PQstatus(c->pg) != CONNECTION_OK)
			broken = 1;
	}
	if (broken || !PQexitPipelineMode(c->pg)) {
		if (kept) {
			PQclear(*kept);
			*kept = NULL;
		}
		if (!c->pg)
			snprintf(err, errlen, PGCONN_COPY_REFUSED);
		else
			pgconn_result_error(c, NULL, err, errlen);
		return -1;
	}
	return 0;
}

int pgconn_pipe_drain(pgconn *c, int *failed_at, char *err, size_t errlen)
{
	*failed_at = -1;
	if (!c->pg) {
		snprintf(err, errlen, "not connected");
		return -1;
	}
	if (PQpipelineStatus(c->pg) == PQ_PIPELINE_OFF)
		return 0;
	return pipe_finish(c, -1, NULL, failed_at, err, errlen);
}

PGresult *pgconn_exec_after(pgconn *c, const char *const *pre, int npre, const char *sql,
                            int nparams, const char *const *params, int *failed_at,
                            char *err, size_t errlen)
{
	PGresult *out;
	int first_main, at, n;

	*failed_at = -1;
	if (npre == 0 && !c->prepare)
		return pgconn_exec(c, sql, nparams, params, err, errlen);
	if (!c->pg) {
		snprintf(err, errlen, "not connected");
		return NULL;
	}
	pgconn_settle(c);
	if (PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF || !PQenterPipelineMode(c->pg)) {
		pgconn_result_error(c, NULL, err, errlen);
		return NULL;
	}
	c->nseg = 0;
	for (int i = 0; i < npre; i++)
		if (send_stmt(c, pre[i], 0, NULL, 0) < 0)
			goto broken;
	first_main = c->nseg;
	if ((n = send_stmt(c, sql, nparams, params, 1)) < 0)
		goto broken;
	if (pipe_finish(c, first_main + n - 1, &out, &at, err, errlen) != 0) {
		*failed_at = PGCONN_LOST;
		return NULL;
	}
	if (at >= 0) {
		*failed_at = at < first_main ? at : npre;
		return NULL;
	}
	return out;
broken:
	/* what was queued still has to be read */
	*failed_at = PGCONN_LOST;
	pgconn_result_error(c, NULL, err, errlen);
	{
		char ignored[256];
		if (c->nseg > 0)
			(void)pipe_finish(c, -1, NULL, &at, ignored, sizeof(ignored));
		else
			(void)PQexitPipelineMode(c->pg);
	}
	return NULL;
}


/*
 * pgconn.c - libpq wrapper (see pgconn.h).  The conninfo is only ever handed
 * to libpq; logs and errors use the safe name built from its parsed parts.
 */
#include "pgconn.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STMT_MAX 128          /* prepared statements kept per connection */

typedef struct stmt_entry {
	char *sql;                /* NULL: a free slot */
	unsigned long hash;
	long id;                  /* its name is pgqlua_<id>; ids are never reused */
} stmt_entry;

struct pgconn {
	char *conninfo;
	char *timezone;              /* the session's TimeZone */
	PGconn *pg;
	PGcancel *volatile cancel;   /* read by signal handlers */
	char safe_name[256];
	int prepare;                 /* keep statements prepared */
	stmt_entry stmts[STMT_MAX];
	int last_slot;               /* the slot found last */
	long next_id;
	/* commands in the pipeline since its last sync: the statement slot
	 * (-1: unnamed) and whether the command is its Parse */
	int *seg_slot;
	unsigned char *seg_parse;
	int nseg, capseg;
	/* pgconn_send_async: a statement in flight, then its result */
	int async;
	PGresult *async_res;
	char async_err[512];
};

/* Newlines and tabs to single spaces, no trailing space: one log line. */
static void fold_line(char *s)
{
	char *out = s;
	for (const char *p = s; *p; p++) {
		char ch = (*p == '\n' || *p == '\r' || *p == '\t') ? ' ' : *p;
		if (ch == ' ' && (out == s || out[-1] == ' '))
			continue;
		*out++ = ch;
	}
	while (out > s && out[-1] == ' ')
		out--;
	*out = '\0';
}

static void build_safe_name(pgconn *c)
{
	static const char *const keys[] = {"host", "hostaddr", "port", "dbname", "user"};
	PQconninfoOption *opts = PQconninfoParse(c->conninfo, NULL);
	size_t used = 0;

	c->safe_name[0] = '\0';
	if (!opts) {
		snprintf(c->safe_name, sizeof(c->safe_name), "(invalid conninfo)");
		return;
	}
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
		for (PQconninfoOption *o = opts; o->keyword; o++)
			if (o->val && *o->val && strcmp(o->keyword, keys[k]) == 0) {
				int n = snprintf(c->safe_name + used, sizeof(c->safe_name) - used, "%s%s=%s",
				                 used ? " " : "", o->keyword, o->val);
				if (n > 0 && (size_t)n < sizeof(c->safe_name) - used)
					used += (size_t)n;
			}
	PQconninfoFree(opts);
	if (used == 0)
		snprintf(c->safe_name, sizeof(c->safe_name), "(libpq defaults)");
}

/* The effective host, port, database and user, as libpq resolved them
 * (PG* variables and defaults included). */
static void name_from_connection(pgconn *c)
{
	const char *parts[][2] = {{"host", PQhost(c->pg)}, {"port", PQport(c->pg)},
	                          {"dbname", PQdb(c->pg)}, {"user", PQuser(c->pg)}};
	size_t used = 0;
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
		if (parts[i][1] && *parts[i][1]) {
			int n = snprintf(c->safe_name + used, sizeof(c->safe_name) - used, "%s%s=%s",
			                 used ? " " : "", parts[i][0], parts[i][1]);
			if (n > 0 && (size_t)n < sizeof(c->safe_name) - used)
				used += (size_t)n;
		}
	if (used == 0)
		build_safe_name(c);
}

/* Server notices and warnings go to the log, not to stderr. */
static void notice_to_log(void *arg, const char *message)
{
	char msg[1024];
	(void)arg;
	snprintf(msg, sizeof(msg), "%s", message);
	fold_line(msg);
	log_debug("server: %s", msg);
}

int pgconn_check_conninfo(const char *conninfo, char *err, size_t errlen)
{
	char *perr = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
	if (!opts) {
		/* libpq's message may quote part of the string: do not pass it on */
		PQfreemem(perr);
		snprintf(err, errlen, "db is not a valid libpq conninfo string or URI");
		return -1;
	}
	PQconninfoFree(opts);
	return 0;
}

pgconn *pgconn_new(const char *conninfo, const char *timezone)
{
	pgconn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->conninfo = strdup(conninfo);
	c->timezone = strdup(timezone ? timezone : "UTC");
	if (!c->conninfo || !c->timezone) {
		free(c->conninfo);
		free(c->timezone);
		free(c);
		return NULL;
	}
	build_safe_name(c);
	return c;
}

void pgconn_free(pgconn *c)
{
	if (!c)
		return;
	pgconn_close(c);
	free(c->seg_slot);
	free(c->seg_parse);
	if (c->conninfo) {
		memset(c->conninfo, 0, strlen(c->conninfo));
		free(c->conninfo);
	}
	free(c->timezone);
	free(c);
}

const char *pgconn_safe_name(const pgconn *c)
{
	return c->safe_name;
}

/* The session settings the runtime's SQL and the scripts rely on, set
 * after the startup: libpq sends PGDATESTYLE and PGTZ as startup
 * parameters, which win over -c options, and a conninfo's own options
 * stay as they are.  0 or -1 with err. */
static int set_session(pgconn *c, char *err, size_t errlen)
{
	char *tz = PQescapeLiteral(c->pg, c->timezone, strlen(c->timezone));
	char *sql;
	size_t n;
	int rc = -1;
	PGresult *res;

	if (!tz) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	n = strlen(tz) + 256;
	sql = malloc(n);
	if (!sql) {
		PQfreemem(tz);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	snprintf(sql, n, "set datestyle = 'ISO'; set intervalstyle = 'postgres';"
	                 " set client_encoding = 'UTF8'; set timezone = %s", tz);
	PQfreemem(tz);
	res = PQexec(c->pg, sql);
	free(sql);
	if (PQresultStatus(res) == PGRES_COMMAND_OK)
		rc = 0;
	else {
		char msg[512], *value;
		pgconn_result_error(c, res, msg, sizeof(msg));
		/* the server quotes the value, which may come from a ${VAR}:
		 * name the setting only */
		if ((value = strstr(msg, "\"TimeZone\": ")) != NULL)
			value[strlen("\"TimeZone\"")] = '\0';
		snprintf(err, errlen, "cannot set the session's settings on %s (config key timezone): %s",
		         c->safe_name, msg);
	}
	PQclear(res);
	return rc;
}

int pgconn_connect(pgconn *c, char *err, size_t errlen)
{
	/* connect_timeout first: a value in the conninfo overrides it */
	const char *keys[] = {"connect_timeout", "application_name", "dbname", NULL};
	const char *vals[] = {"10", "pgqlua", c->conninfo, NULL};

	pgconn_close(c);
	if (pgconn_check_conninfo(c->conninfo, err, errlen) != 0)
		return -1;
	c->pg = PQconnectdbParams(keys, vals, 1);
	if (!c->pg) {
		snprintf(err, errlen, "out of memory connecting to %s", c->safe_name);
		return -1;
	}
	name_from_connection(c);
	PQsetNoticeProcessor(c->pg, notice_to_log, NULL);
	if (PQstatus(c->pg) != CONNECTION_OK) {
		char msg[512];
		snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c->pg));
		fold_line(msg);
		snprintf(err, errlen, "cannot connect to %s: %s", c->safe_name, msg);
		pgconn_close(c);
		return -1;
	}
	if (set_session(c, err, errlen) != 0) {
		pgconn_close(c);
		return -1;
	}
	c->cancel = PQgetCancel(c->pg);
	return 0;
}

void pgconn_cancel(pgconn *c)
{
	char buf[256];
	PGcancel *cancel = c ? c->cancel : NULL;
	if (cancel)
		(void)PQcancel(cancel, buf, sizeof(buf));
}

static void stmt_forget(pgconn *c, int slot)
{
	free(c->stmts[slot].sql);
	c->stmts[slot].sql = NULL;
}

void pgconn_close(pgconn *c)
{
	PGcancel *cancel = c->cancel;
	c->async = 0;
	PQclear(c->async_res);
	c->async_res = NULL;
	for (int i = 0; i < STMT_MAX; i++)
		stmt_forget(c, i);
	c->nseg = 0;
	c->cancel = NULL;
	if (cancel)
		PQfreeCancel(cancel);
	if (c->pg)
		PQfinish(c->pg);
	c->pg = NULL;
}

int pgconn_is_ok(const pgconn *c)
{
	return c->pg && PQstatus(c->pg) == CONNECTION_OK;
}

PGconn *pgconn_pg(pgconn *c)
{
	return c->pg;
}

void pgconn_result_error(pgconn *c, const PGresult *res, char *err, size_t errlen)
{
	char msg[1024];
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *text = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;

	if (!text)
		text = c->pg ? PQerrorMessage(c->pg) : "not connected";
	snprintf(msg, sizeof(msg), "%s%s%s", state ? state : "", state ? " " : "", text);
	fold_line(msg);
	snprintf(err, errlen, "%s", msg);
}

/* A statement put the connection into COPY: end it (db:exec does not speak
 * COPY).  Returns 0, or -1 when the connection had to be closed. */
static int refuse_copy(pgconn *c, ExecStatusType st)
{
	char *buf;
	if (st == PGRES_COPY_IN)
		(void)PQputCopyEnd(c->pg, "COPY is not supported by db:exec");
	else if (st == PGRES_COPY_OUT)
		while (PQgetCopyData(c->pg, &buf, 0) > 0)
			PQfreemem(buf);
	else if (st == PGRES_COPY_BOTH) {
		pgconn_close(c);
		return -1;
	}
	return 0;
}

static int is_copy(ExecStatusType st)
{
	return st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH;
}

/* Read the result of the statement in flight (pgconn_send_async), if
 * any, so that the connection can take another one. */
static void settle(pgconn *c)
{
	PGresult *res;
	if (!c->async)
		return;
	c->async = 0;
	while (c->pg && (res = PQgetResult(c->pg)) != NULL) {
		ExecStatusType st = PQresultStatus(res);
		if (st == PGRES_TUPLES_OK && !c->async_res && !c->async_err[0]) {
			c->async_res = res;
			continue;
		}
		if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && !c->async_err[0])
			pgconn_result_error(c, res, c->async_err, sizeof(c->async_err));
		PQclear(res);
	}
	if (c->async_err[0]) {
		PQclear(c->async_res);
		c->async_res = NULL;
	} else if (!c->async_res)
		pgconn_result_error(c, NULL, c->async_err, sizeof(c->async_err));
}

int pgconn_send_async(pgconn *c, const char *sql)
{
	pgconn_drop_async(c);
	c->async_err[0] = '\0';
	if (!c->pg || !PQsendQuery(c->pg, sql)) {
		pgconn_result_error(c, NULL, c->async_err, sizeof(c->async_err));
		return -1;
	}
	c->async = 1;
	return 0;
}

PGresult *pgconn_take_async(pgconn *c, char *err, size_t errlen)
{
	PGresult *res;
	settle(c);
	res = c->async_res;
	c->async_res = NULL;
	if (!res)
		snprintf(err, errlen, "%s", c->async_err[0] ? c->async_err : "no statement was sent");
	c->async_err[0] = '\0';
	return res;
}

const char *pgconn_async_error(const pgconn *c)
{
	return !c->async && c->async_err[0] ? c->async_err : NULL;
}

void pgconn_drop_async(pgconn *c)
{
	settle(c);
	PQclear(c->async_res);
	c->async_res = NULL;
}

PGresult *pgconn_exec(pgconn *c, const char *sql, int nparams, const char *const *params,
                      char *err, size_t errlen)
{
	PGresult *res;
	ExecStatusType st;

	if (!c->pg) {
		snprintf(err, errlen, "not connected");
		return NULL;
	}
	settle(c);
	if (params)
		res = PQexecParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0);
	else
		res = PQexec(c->pg, sql);
	st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return res;
	if (is_copy(st)) {
		PGresult *r;
		PQclear(res);
		snprintf(err, errlen, "COPY is not supported by db:exec");
		if (refuse_copy(c, st) == 0)
			while ((r = PQgetResult(c->pg)) != NULL)
				PQclear(r);
		return NULL;
	}
	pgconn_result_error(c, res, err, errlen);
	PQclear(res);
	return NULL;
}

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
		stmt_forget(c, slot);
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
			stmt_forget(c, slot);   /* failed or skipped: maybe not there */
		return;
	}
	state = st == PGRES_FATAL_ERROR ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	/* 0A000: the plan's result type changed */
	if (state && strcmp(state, "0A000") == 0)
		stmt_forget(c, slot);
	/* 26000: it is gone, and so may be the others (DEALLOCATE ALL) */
	if (state && strcmp(state, "26000") == 0)
		for (int k = 0; k < STMT_MAX; k++)
			stmt_forget(c, k);
}

int pgconn_pipe_send(pgconn *c, const char *sql, int nparams, const char *const *params, int prepare)
{
	if (!c->pg)
		return -1;
	if (PQpipelineStatus(c->pg) == PQ_PIPELINE_OFF) {
		settle(c);
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
		if (is_copy(st)) {
			if (*failed_at < 0) {
				*failed_at = got;
				snprintf(err, errlen, "COPY is not supported by db:exec and db:send");
			}
			if (refuse_copy(c, st) != 0)
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
			snprintf(err, errlen, "COPY BOTH is not supported by db:exec and db:send");
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
                            int nparams, const char *const *params, int *failed_pre,
                            char *err, size_t errlen)
{
	PGresult *out;
	int first_main, at, n;

	*failed_pre = 0;
	if (npre == 0 && !c->prepare)
		return pgconn_exec(c, sql, nparams, params, err, errlen);
	if (!c->pg) {
		snprintf(err, errlen, "not connected");
		return NULL;
	}
	settle(c);
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
	if (pipe_finish(c, first_main + n - 1, &out, &at, err, errlen) != 0)
		return NULL;
	if (at >= 0) {
		*failed_pre = at < first_main;
		return NULL;
	}
	return out;
broken:
	/* what was queued still has to be read */
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

int pgconn_install(pgconn *c, const char *sql, char *err, size_t errlen)
{
	char ignored[256];
	if (pgconn_cmd(c, "begin; select pg_advisory_xact_lock(7236354);"
	                  " set local client_min_messages = warning", err, errlen) == 0 &&
	    pgconn_cmd(c, sql, err, errlen) == 0 && pgconn_cmd(c, "commit", err, errlen) == 0)
		return 0;
	if (pgconn_is_ok(c) && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
		(void)pgconn_cmd(c, "rollback", ignored, sizeof(ignored));
	return -1;
}

int pgconn_exec_rows(pgconn *c, const char *sql, PGresult **out, int max, char *err, size_t errlen)
{
	PGresult *res;
	int n = 0, failed = 0;

	if (c->pg)
		settle(c);
	if (!c->pg || !PQsendQuery(c->pg, sql)) {
		pgconn_result_error(c, NULL, err, errlen);
		return -1;
	}
	while ((res = PQgetResult(c->pg)) != NULL) {
		ExecStatusType st = PQresultStatus(res);
		if (!failed && st == PGRES_TUPLES_OK && n < max) {
			out[n++] = res;
			continue;
		}
		if (!failed && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
			pgconn_result_error(c, res, err, errlen);
			failed = 1;
		}
		PQclear(res);
	}
	if (failed) {
		while (n > 0)
			PQclear(out[--n]);
		return -1;
	}
	return n;
}

int pgconn_cmd(pgconn *c, const char *sql, char *err, size_t errlen)
{
	PGresult *res = pgconn_exec(c, sql, 0, NULL, err, errlen);
	if (!res)
		return -1;
	PQclear(res);
	return 0;
}

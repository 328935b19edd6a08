/*
 * pgconn.c - libpq wrapper (see pgconn.h).  The conninfo is only ever handed
 * to libpq; logs and errors use the safe name built from its parsed parts.
 */
#include "pgconn.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pgconn {
	char *conninfo;
	PGconn *pg;
	PGcancel *volatile cancel;   /* read by signal handlers */
	char safe_name[256];
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

pgconn *pgconn_new(const char *conninfo)
{
	pgconn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->conninfo = strdup(conninfo);
	if (!c->conninfo) {
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
	if (c->conninfo) {
		memset(c->conninfo, 0, strlen(c->conninfo));
		free(c->conninfo);
	}
	free(c);
}

const char *pgconn_safe_name(const pgconn *c)
{
	return c->safe_name;
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

void pgconn_close(pgconn *c)
{
	PGcancel *cancel = c->cancel;
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

PGresult *pgconn_exec(pgconn *c, const char *sql, int nparams, const char *const *params,
                      char *err, size_t errlen)
{
	PGresult *res;
	ExecStatusType st;

	if (!c->pg) {
		snprintf(err, errlen, "not connected");
		return NULL;
	}
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

PGresult *pgconn_exec_after(pgconn *c, const char *const *pre, int npre, const char *sql,
                            int nparams, const char *const *params, int *failed_pre,
                            char *err, size_t errlen)
{
	PGresult *res, *out = NULL;
	int sent = 0, got = 0, failed = 0;

	*failed_pre = 0;
	if (npre == 0)
		return pgconn_exec(c, sql, nparams, params, err, errlen);
	if (!c->pg) {
		snprintf(err, errlen, "not connected");
		return NULL;
	}
	if (!PQenterPipelineMode(c->pg)) {
		pgconn_result_error(c, NULL, err, errlen);
		return NULL;
	}
	for (int i = 0; i < npre && sent == i; i++)
		sent += PQsendQueryParams(c->pg, pre[i], 0, NULL, NULL, NULL, NULL, 0);
	if (sent == npre)
		sent += PQsendQueryParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0);
	if (sent < npre + 1 || !PQpipelineSync(c->pg)) {
		pgconn_result_error(c, NULL, err, errlen);
		failed = 1;
		*failed_pre = sent < npre;
		/* what was sent still has to be read: a sync is needed for that */
		if (sent > 0)
			(void)PQpipelineSync(c->pg);
	}
	/* one result (then NULL) per statement sent, then the sync */
	while (got < sent) {
		res = PQgetResult(c->pg);
		if (res == NULL) {
			got++;
			continue;
		}
		if (is_copy(PQresultStatus(res))) {
			if (!failed)
				snprintf(err, errlen, "COPY is not supported by db:exec");
			failed = 1;
			if (refuse_copy(c, PQresultStatus(res)) != 0) {
				PQclear(res);
				PQclear(out);
				return NULL;
			}
		} else if (!failed && PQresultStatus(res) != PGRES_COMMAND_OK &&
		           PQresultStatus(res) != PGRES_TUPLES_OK) {
			pgconn_result_error(c, res, err, errlen);
			failed = 1;
			*failed_pre = got < npre;
		}
		if (got == npre && !failed && !out)
			out = res;
		else
			PQclear(res);
	}
	while ((res = PQgetResult(c->pg)) != NULL) {
		ExecStatusType st = PQresultStatus(res);
		PQclear(res);
		if (st == PGRES_PIPELINE_SYNC)
			break;
	}
	if (!PQexitPipelineMode(c->pg) && !failed) {
		pgconn_result_error(c, NULL, err, errlen);
		failed = 1;
	}
	if (failed) {
		PQclear(out);
		return NULL;
	}
	return out;
}

int pgconn_pipe_send(pgconn *c, const char *sql, int nparams, const char *const *params)
{
	if (!c->pg)
		return -1;
	if (PQpipelineStatus(c->pg) == PQ_PIPELINE_OFF && !PQenterPipelineMode(c->pg))
		return -1;
	return PQsendQueryParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0) ? 0 : -1;
}

int pgconn_pipe_drain(pgconn *c, int n, int *failed_at, char *err, size_t errlen)
{
	PGresult *res;
	int got = 0, broken = 0;

	*failed_at = -1;
	if (!c->pg) {
		snprintf(err, errlen, "not connected");
		return -1;
	}
	if (PQpipelineStatus(c->pg) == PQ_PIPELINE_OFF)
		return 0;
	if (!PQpipelineSync(c->pg)) {
		pgconn_result_error(c, NULL, err, errlen);
		return -1;
	}
	/* one result, then NULL, per statement; then the sync's result */
	while (got < n) {
		ExecStatusType st;
		res = PQgetResult(c->pg);
		if (res == NULL) {
			got++;
			continue;
		}
		st = PQresultStatus(res);
		if (is_copy(st)) {
			if (*failed_at < 0) {
				*failed_at = got;
				snprintf(err, errlen, "COPY is not supported by db:send");
			}
			if (refuse_copy(c, st) != 0) {
				PQclear(res);
				snprintf(err, errlen, "COPY is not supported by db:send");
				return -1;
			}
		} else if (*failed_at < 0 && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
			*failed_at = got;
			pgconn_result_error(c, res, err, errlen);
		}
		PQclear(res);
		if (PQstatus(c->pg) != CONNECTION_OK) {
			broken = 1;
			break;
		}
	}
	while (!broken && (res = PQgetResult(c->pg)) != NULL) {
		ExecStatusType st = PQresultStatus(res);
		PQclear(res);
		if (st == PGRES_PIPELINE_SYNC)
			break;
		if (PQstatus(c->pg) != CONNECTION_OK)
			broken = 1;
	}
	if (broken || !PQexitPipelineMode(c->pg)) {
		pgconn_result_error(c, NULL, err, errlen);
		return -1;
	}
	return 0;
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

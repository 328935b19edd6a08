/*
 * pgconn.c - libpq wrapper (see pgconn.h): connect, close, plain and
 * async statements, errors.  Prepared statements and the pipeline are in
 * pgpipe.c.  The conninfo is only ever handed
 * to libpq; logs and errors use the safe name built from its parsed parts.
 */
#include "pgconn_int.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INSTALL_LOCK_KEY "7236354"   /* pg_advisory_xact_lock key of pgconn_install */

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
	log_fold(msg);
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
	pgconn_close(c, "the consumer is closing");
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

	pgconn_close(c, "connecting again");
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
		log_fold(msg);
		snprintf(err, errlen, "cannot connect to %s: %s", c->safe_name, msg);
		PQfinish(c->pg);
		c->pg = NULL;
		return -1;
	}
	if (set_session(c, err, errlen) != 0) {
		pgconn_close(c, "the session's settings could not be set");
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

void pgconn_stmt_forget(pgconn *c, int slot)
{
	free(c->stmts[slot].sql);
	c->stmts[slot].sql = NULL;
}

void pgconn_close(pgconn *c, const char *why)
{
	PGcancel *cancel = c->cancel;
	if (c->pg)
		log_debug("connection to %s closed: %s", c->safe_name, why);
	c->async = 0;
	PQclear(c->async_res);
	c->async_res = NULL;
	for (int i = 0; i < STMT_MAX; i++)
		pgconn_stmt_forget(c, i);
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
	log_fold(msg);
	snprintf(err, errlen, "%s", msg);
}

/* A statement put the connection into COPY: end it (the wrapper does not
 * speak the COPY protocol).  Returns 0, or -1 when the connection had to be closed. */
int pgconn_refuse_copy(pgconn *c, ExecStatusType st)
{
	char *buf;
	if (st == PGRES_COPY_IN)
		(void)PQputCopyEnd(c->pg, PGCONN_COPY_REFUSED);
	else if (st == PGRES_COPY_OUT)
		while (PQgetCopyData(c->pg, &buf, 0) > 0)
			PQfreemem(buf);
	else if (st == PGRES_COPY_BOTH) {
		pgconn_close(c, "a statement started COPY BOTH");
		return -1;
	}
	return 0;
}

int pgconn_is_copy(ExecStatusType st)
{
	return st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH;
}

/* Read the result of the statement in flight (pgconn_send_async), if
 * any, so that the connection can take another one. */
void pgconn_settle(pgconn *c)
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
	pgconn_settle(c);
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
	pgconn_settle(c);
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
	pgconn_settle(c);
	if (params)
		res = PQexecParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0);
	else
		res = PQexec(c->pg, sql);
	st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return res;
	if (pgconn_is_copy(st)) {
		PGresult *r;
		PQclear(res);
		snprintf(err, errlen, PGCONN_COPY_REFUSED);
		if (pgconn_refuse_copy(c, st) == 0)
			while ((r = PQgetResult(c->pg)) != NULL)
				PQclear(r);
		return NULL;
	}
	pgconn_result_error(c, res, err, errlen);
	PQclear(res);
	return NULL;
}

int pgconn_install(pgconn *c, const char *sql, char *err, size_t errlen)
{
	char ignored[256];
	if (pgconn_cmd(c, "begin; select pg_advisory_xact_lock(" INSTALL_LOCK_KEY ");"
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
		pgconn_settle(c);
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

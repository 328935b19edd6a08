/*
 * fake_pgconn.c - the pgconn test double for test_ldbwin.c (see
 * fake_pgconn.h); also stands in for libpq's PQtransactionStatus.
 */
#include "fake_pgconn.h"
#include "ldbwin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXQ 4096
#define MAXW 16384
#define MAXSP 16

struct pgconn {
	int ok, prepare, aborted, idle;
	char *sent;                 /* the log of commands */
	size_t nsent, capsent;
	char *queue[MAXQ];          /* pipelined since the last sync; NULL: a Parse */
	int nqueue;
	char *applied[MAXW];        /* writes in effect */
	int napplied;
	int sp[MAXSP];              /* savepoint stack: napplied when taken */
	int nsp;
	char fail[8][64];           /* commands that fail on their next run */
	int nfail;
	char error[256];
	char applied_text[MAXW * 8];
};

static void say(pgconn *c, const char *word)
{
	size_t n = strlen(word) + 1;
	if (c->nsent + n + 1 > c->capsent) {
		c->capsent = (c->capsent + n + 1) * 2;
		c->sent = realloc(c->sent, c->capsent);
		if (!c->sent)
			abort();
	}
	if (c->nsent)
		c->sent[c->nsent++] = ' ';
	memcpy(c->sent + c->nsent, word, n);
	c->nsent += n - 1;
}

/* Our savepoint commands in short, others as sent. */
static const char *shown(const char *sql)
{
	if (strcmp(sql, "savepoint " LDBWIN_SAVEPOINT) == 0)
		return "SAVEPOINT";
	if (strcmp(sql, "release savepoint " LDBWIN_SAVEPOINT) == 0)
		return "RELEASE";
	if (strcmp(sql, "rollback to savepoint " LDBWIN_SAVEPOINT) == 0)
		return "ROLLBACK_TO";
	return sql;
}

static int take_fail(pgconn *c, const char *cmd)
{
	for (int i = 0; i < c->nfail; i++)
		if (strcmp(c->fail[i], cmd) == 0) {
			memmove(c->fail[i], c->fail[i + 1], sizeof(c->fail[0]) * (size_t)(c->nfail - i - 1));
			c->nfail--;
			return 1;
		}
	return 0;
}

/* Run one command as the server would: 0, or -1 with c->error. */
static int run(pgconn *c, const char *cmd)
{
	if (!c->ok) {
		snprintf(c->error, sizeof(c->error), "server closed the connection unexpectedly");
		return -1;
	}
	if (strcmp(cmd, "ROLLBACK_TO") == 0) {
		if (c->nsp == 0)
			goto no_savepoint;
		for (int i = c->sp[c->nsp - 1]; i < c->napplied; i++)
			free(c->applied[i]);
		c->napplied = c->sp[c->nsp - 1];
		c->aborted = 0;
		return 0;
	}
	if (c->aborted) {
		snprintf(c->error, sizeof(c->error), "25P02 current transaction is aborted");
		return -1;
	}
	if (strcmp(cmd, "Parse") == 0)
		return 0;
	if (take_fail(c, cmd)) {
		c->aborted = 1;
		snprintf(c->error, sizeof(c->error), "23505 duplicate key value violates unique constraint \"t_pkey\"");
		return -1;
	}
	if (strcmp(cmd, "SAVEPOINT") == 0) {
		if (c->nsp == MAXSP)
			abort();
		c->sp[c->nsp++] = c->napplied;
	} else if (strcmp(cmd, "RELEASE") == 0) {
		if (c->nsp == 0)
			goto no_savepoint;
		c->nsp--;
	} else if (strcmp(cmd, "commit") == 0) {
		c->idle = 1;
		c->nsp = 0;
	} else {
		if (c->napplied == MAXW)
			abort();
		c->applied[c->napplied++] = strdup(cmd);
	}
	return 0;
no_savepoint:
	c->aborted = 1;
	snprintf(c->error, sizeof(c->error), "3B001 savepoint \"" LDBWIN_SAVEPOINT "\" does not exist");
	return -1;
}

pgconn *fake_pgconn_new(void)
{
	pgconn *c = calloc(1, sizeof(*c));
	if (!c)
		abort();
	c->ok = 1;
	return c;
}

void fake_pgconn_fail(pgconn *c, const char *sql)
{
	snprintf(c->fail[c->nfail++], sizeof(c->fail[0]), "%s", sql);
}

void fake_pgconn_prepare(pgconn *c, int on)
{
	c->prepare = on;
}

void fake_pgconn_lose(pgconn *c)
{
	c->ok = 0;
}

void fake_pgconn_commit(pgconn *c)
{
	say(c, "COMMIT");
	c->nsp = 0;
}

int fake_pgconn_exec(pgconn *c, const char *const *pre, int npre, const char *sql,
                     char *err, size_t errlen)
{
	int failed_at = -1;
	for (int i = 0; i <= npre; i++) {
		const char *cmd = shown(i < npre ? pre[i] : sql);
		say(c, cmd);
		if (failed_at < 0 && run(c, cmd) != 0) {
			failed_at = i;
			snprintf(err, errlen, "%s", c->error);
		}
	}
	say(c, "SYNC");
	return failed_at;
}

const char *fake_pgconn_sent(const pgconn *c)
{
	return c->sent ? c->sent : "";
}

const char *fake_pgconn_applied(pgconn *c)
{
	size_t n = 0;
	c->applied_text[0] = '\0';
	for (int i = 0; i < c->napplied; i++)
		n += (size_t)snprintf(c->applied_text + n, sizeof(c->applied_text) - n, "%s%s",
		                      i ? "," : "", c->applied[i]);
	return c->applied_text;
}

void pgconn_free(pgconn *c)
{
	if (!c)
		return;
	for (int i = 0; i < c->nqueue; i++)
		free(c->queue[i]);
	for (int i = 0; i < c->napplied; i++)
		free(c->applied[i]);
	free(c->sent);
	free(c);
}

/* ---- the pgconn_* functions ldbwin.c calls ---- */

int pgconn_pipe_send(pgconn *c, const char *sql, int nparams, const char *const *params, int prepare)
{
	char text[256];
	size_t n;
	if (!c->ok) {
		snprintf(c->error, sizeof(c->error), "server closed the connection unexpectedly");
		return -1;
	}
	n = (size_t)snprintf(text, sizeof(text), "%s", shown(sql));
	for (int i = 0; i < nparams && n < sizeof(text); i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "%s%s", i ? "," : "(",
		                      params[i] ? params[i] : "NULL");
	if (nparams > 0 && n < sizeof(text))
		snprintf(text + n, sizeof(text) - n, ")");
	if (c->nqueue + 2 > MAXQ)
		abort();
	say(c, text);
	if (prepare && c->prepare)
		c->queue[c->nqueue++] = NULL;
	c->queue[c->nqueue++] = strdup(text);
	return prepare && c->prepare ? 2 : 1;
}

int pgconn_pipe_drain(pgconn *c, int *failed_at, char *err, size_t errlen)
{
	int n = c->nqueue;
	*failed_at = -1;
	c->nqueue = 0;
	if (!c->ok) {
		snprintf(err, errlen, "server closed the connection unexpectedly");
		for (int i = 0; i < n; i++)
			free(c->queue[i]);
		return -1;
	}
	if (n > 0)
		say(c, "SYNC");
	for (int i = 0; i < n; i++) {
		/* after an error the server skips the rest up to the sync */
		if (*failed_at < 0 && run(c, c->queue[i] ? c->queue[i] : "Parse") != 0) {
			*failed_at = i;
			snprintf(err, errlen, "%s", c->error);
		}
		free(c->queue[i]);
	}
	return 0;
}

int pgconn_cmd(pgconn *c, const char *sql, char *err, size_t errlen)
{
	const char *cmd = shown(sql);
	say(c, cmd);
	if (run(c, cmd) != 0) {
		snprintf(err, errlen, "%s", c->error);
		return -1;
	}
	return 0;
}

void pgconn_result_error(pgconn *c, const PGresult *res, char *err, size_t errlen)
{
	(void)res;
	snprintf(err, errlen, "%s", c->error);
}

int pgconn_is_ok(const pgconn *c)
{
	return c->ok;
}

void pgconn_close(pgconn *c, const char *why)
{
	(void)why;
	say(c, "CLOSE");
	c->ok = 0;
}

PGconn *pgconn_pg(pgconn *c)
{
	return (PGconn *)(void *)c;
}

PGTransactionStatusType PQtransactionStatus(const PGconn *conn)
{
	const pgconn *c = (const pgconn *)(const void *)conn;
	if (!c->ok)
		return PQTRANS_UNKNOWN;
	if (c->idle)
		return PQTRANS_IDLE;
	return c->aborted ? PQTRANS_INERROR : PQTRANS_INTRANS;
}

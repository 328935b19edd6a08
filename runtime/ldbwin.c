/*
 * ldbwin.c - the savepoint window behind the `db` handle (see ldbwin.h):
 * the log of sends, their replay without a failed event, the failure
 * queue.  No Lua here: ldb.c calls it per statement, batch.c per event.
 */
#include "ldbwin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* pgqlua.rules.TXN_REFUSED, set by ldb_open_lib: what db:exec and db:send
 * say to transaction control (also here, where no Lua state is at hand) */
static char refusal[256] = "transaction control is not allowed";

void ldbwin_set_refusal(const char *text)
{
	snprintf(refusal, sizeof(refusal), "%s", text);
}

const char *ldbwin_refusal(void)
{
	return refusal;
}

typedef struct ldb_sent ldb_sent;
typedef struct ldb_failure ldb_failure;

struct ldb_state {
	pgconn *conn;
	int active;            /* inside a batch: the handle may be used */
	int window_open;       /* the window's savepoint is taken */
	int release_pending;   /* a closed window's savepoint awaits RELEASE */
	int event;             /* row of the event being run, or LDB_HOOK */
	int event_stmts;       /* statements this event ran or sent */
	int event_exec;        /* this event used db:exec */
	int event_unlogged;    /* this event's later sends are not in the log */
	int event_undone;      /* this event's statements were rolled back already */
	ldb_error_source sql_failed;   /* a statement of this event failed, and which kind */
	int broken;            /* our savepoint failed: the batch must roll back */
	char sql_error[LDBWIN_MSG_LEN];
	long statements;       /* statements run in this batch */
	/* the window's log of sends: what a replay sends again */
	ldb_sent *log;
	int nlog, caplog;
	char *arena;           /* their SQL text and parameters */
	size_t used, cap;
	/* statements in the pipeline since its last sync: the event of each */
	int *pend;
	int npend, cappend;
	/* events found failed after they ended, for the batch */
	ldb_failure *fail;
	int nfail, capfail;
};

#define WINDOW LDBWIN_SAVEPOINT
#define EV_CONTROL (-2)            /* pend: our RELEASE and SAVEPOINT */
#define EV_NONE (-3)               /* between events: failures found are queued */

struct ldb_sent {
	int event;
	size_t off;                    /* in the arena: see log_add */
};

struct ldb_failure {
	int event;
	char msg[LDBWIN_MSG_LEN];
};

static int grow(void **p, int *cap, int need, size_t size)
{
	int n = *cap ? *cap : 64;
	void *np;
	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	np = realloc(*p, (size_t)n * size);
	if (!np)
		return -1;
	*p = np;
	*cap = n;
	return 0;
}

/* Keep a send for a replay: in the arena, the parameter count, the SQL,
 * then per parameter a byte (1: NULL) and its text.  0 or -1 (no memory). */
static int log_add(ldb_state *st, const char *sql, int nparams, const char *const *params)
{
	size_t need = sizeof(int) + strlen(sql) + 1;
	char *p;
	for (int i = 0; i < nparams; i++)
		need += 2 + (params[i] ? strlen(params[i]) : 0);
	if (grow((void **)&st->log, &st->caplog, st->nlog + 1, sizeof(*st->log)) != 0)
		return -1;
	if (st->used + need > st->cap) {
		size_t n = st->cap ? st->cap : 65536;
		char *na;
		while (n < st->used + need)
			n *= 2;
		if (!(na = realloc(st->arena, n)))
			return -1;
		st->arena = na;
		st->cap = n;
	}
	p = st->arena + st->used;
	st->log[st->nlog].event = st->event;
	st->log[st->nlog].off = st->used;
	memcpy(p, &nparams, sizeof(int));
	p += sizeof(int);
	p = stpcpy(p, sql) + 1;
	for (int i = 0; i < nparams; i++) {
		*p++ = params[i] == NULL;
		p = stpcpy(p, params[i] ? params[i] : "") + 1;
	}
	st->used += need;
	st->nlog++;
	return 0;
}

/* Queue a statement in the pipeline for `event`: 0, or -1 when the
 * connection or memory failed. */
static int pipe_send(ldb_state *st, int event, const char *sql, int nparams, const char *const *params)
{
	/* our own savepoint commands are never prepared: a script may
	 * DEALLOCATE them, and their failure must not be an event's */
	int n = pgconn_pipe_send(st->conn, sql, nparams, params, event != EV_CONTROL);
	if (n < 0 || grow((void **)&st->pend, &st->cappend, st->npend + n, sizeof(int)) != 0)
		return -1;
	while (n-- > 0)
		st->pend[st->npend++] = event;   /* a Parse, then the statement */
	return 0;
}

/* Send log entry i again. */
static int log_send(ldb_state *st, int i)
{
	const char *p = st->arena + st->log[i].off, *sql;
	const char *params[64], **pp = params;
	int nparams, rc;
	memcpy(&nparams, p, sizeof(int));
	p += sizeof(int);
	sql = p;
	p += strlen(p) + 1;
	if (nparams > 64 && !(pp = malloc(sizeof(char *) * (size_t)nparams)))
		return -1;
	for (int k = 0; k < nparams; k++) {
		int null = *p++;
		pp[k] = null ? NULL : p;
		p += strlen(p) + 1;
	}
	rc = pipe_send(st, st->log[i].event, sql, nparams, nparams > 0 ? pp : NULL);
	if (pp != params)
		free(pp);
	return rc;
}

static void log_clear(ldb_state *st)
{
	st->nlog = 0;
	st->used = 0;
}

void ldbwin_fail_event(ldb_state *st, ldb_error_source src, const char *msg)
{
	st->sql_failed = src;
	snprintf(st->sql_error, sizeof(st->sql_error), "%s", msg);
}

/* Queue a failure of an event that has ended. */
static int add_failure(ldb_state *st, int event, const char *msg)
{
	if (grow((void **)&st->fail, &st->capfail, st->nfail + 1, sizeof(*st->fail)) != 0)
		return -1;
	st->fail[st->nfail].event = event;
	snprintf(st->fail[st->nfail].msg, sizeof(st->fail[st->nfail].msg), "db:send: %s", msg);
	st->nfail++;
	return 0;
}

/* Open the window if it is not: its savepoint goes out in the pipeline,
 * with the RELEASE of the last one. */
static int window_open(ldb_state *st)
{
	if (st->window_open)
		return 0;
	if (st->release_pending) {
		if (pipe_send(st, EV_CONTROL, "release savepoint " WINDOW, 0, NULL) != 0)
			return -1;
		st->release_pending = 0;
	}
	if (pipe_send(st, EV_CONTROL, "savepoint " WINDOW, 0, NULL) != 0)
		return -1;
	st->window_open = 1;
	return 0;
}

/* Roll the window back and send its log again without event `drop`. */
static int replay_without(ldb_state *st, int drop, char *err, size_t errlen)
{
	int n = 0;
	if (drop == st->event)
		st->event_undone = 1;
	for (int i = 0; i < st->nlog; i++)
		if (st->log[i].event != drop)
			st->log[n++] = st->log[i];
	st->nlog = n;
	if (pgconn_cmd(st->conn, "rollback to savepoint " WINDOW, err, errlen) != 0)
		return -1;
	for (int i = 0; i < st->nlog; i++)
		if (log_send(st, i) != 0) {
			pgconn_result_error(st->conn, NULL, err, errlen);
			return -1;
		}
	return 0;
}

/* Wait for everything in the pipeline.  A failed statement's event is
 * undone (replay_without); the event being run is marked failed, an
 * ended one queued.  0, or -1 with err: the transaction is unusable. */
static int drain(ldb_state *st, char *err, size_t errlen)
{
	char msg[512];
	while (st->npend > 0) {
		int at, event;
		st->npend = 0;
		if (pgconn_pipe_drain(st->conn, &at, msg, sizeof(msg)) != 0) {
			snprintf(err, errlen, "%s", msg);
			return -1;
		}
		if (PQtransactionStatus(pgconn_pg(st->conn)) == PQTRANS_IDLE) {
			pgconn_close(st->conn, "a db:send statement ended the batch's transaction");
			snprintf(err, errlen, "db:send: %s", refusal);
			return -1;
		}
		if (at < 0)
			return 0;
		event = st->pend[at];
		if (event == EV_CONTROL) {
			snprintf(err, errlen, "cannot take a savepoint: %s", msg);
			return -1;
		}
		if (event == st->event) {
			char m[560];
			snprintf(m, sizeof(m), "db:send: %s", msg);
			ldbwin_fail_event(st, LDB_ERR_SEND, m);
		} else if (add_failure(st, event, msg) != 0) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		if (replay_without(st, event, err, errlen) != 0)
			return -1;
	}
	return 0;
}

static void window_close(ldb_state *st)
{
	if (st->window_open)
		st->release_pending = 1;
	st->window_open = 0;
	log_clear(st);
}

int ldb_close(ldb_state *st, char *err, size_t errlen)
{
	if (st->broken) {
		snprintf(err, errlen, "%s", st->sql_error);
		return -1;
	}
	if (st->npend > 0 && drain(st, err, errlen) != 0)
		return -1;
	window_close(st);
	return 0;
}

int ldb_take_failure(ldb_state *st, int *event, char *msg, size_t msglen)
{
	if (st->nfail == 0)
		return 0;
	*event = st->fail[0].event;
	snprintf(msg, msglen, "%s", st->fail[0].msg);
	memmove(st->fail, st->fail + 1, sizeof(*st->fail) * (size_t)(st->nfail - 1));
	st->nfail--;
	return 1;
}

int ldb_failures_pending(const ldb_state *st)
{
	return st->nfail > 0;
}

void ldb_event_begin(ldb_state *st, int event)
{
	st->event = event;
	st->event_stmts = 0;
	st->event_exec = 0;
	st->event_unlogged = 0;
	st->event_undone = 0;
	st->sql_failed = LDB_ERR_NONE;
	st->sql_error[0] = '\0';
}

int ldb_event_statements(const ldb_state *st)
{
	return st->event_stmts;
}

ldb_error_source ldb_event_error(const ldb_state *st, const char **msg)
{
	if (msg)
		*msg = st->sql_error;
	return st->sql_failed;
}

ldb_state *ldb_new(void)
{
	return calloc(1, sizeof(ldb_state));
}

int ldb_event_end(ldb_state *st, int keep, int close, char *err, size_t errlen)
{
	int rc = 0;
	if (st->broken) {
		snprintf(err, errlen, "%s", st->sql_error);
		return -1;
	}
	if (close || st->event_exec || st->event_unlogged || st->nlog >= LDBWIN_WINDOW_MAX)
		close = 1;
	else if (st->event_stmts == 0 || (keep && !st->sql_failed))
		goto out;   /* its sends stay in flight, in the window */
	if (drain(st, err, errlen) != 0)
		return -1;
	if (st->sql_failed && st->event_stmts > 0) {
		/* drain undid it already unless the failure was a db:exec's */
		if (keep) {
			snprintf(err, errlen, "%s", st->sql_error);
			rc = 1;
		}
		keep = 0;
	}
	if (!keep && st->event_stmts > 0) {
		if (!st->event_undone &&
		    (replay_without(st, st->event, err, errlen) != 0 || drain(st, err, errlen) != 0))
			return -1;
		close = 1;
	}
	if (close)
		window_close(st);
out:
	st->event = EV_NONE;
	return rc;
}

void ldb_after_commit(ldb_state *st)
{
	st->window_open = 0;
	st->release_pending = 0;
	log_clear(st);
}

void ldb_batch_begin(ldb_state *st, pgconn *conn)
{
	st->conn = conn;
	st->active = 1;
	st->window_open = 0;
	st->release_pending = 0;
	st->statements = 0;
	st->broken = 0;
	st->npend = 0;
	st->nfail = 0;
	log_clear(st);
	ldb_event_begin(st, LDB_HOOK);
}

void ldb_batch_end(ldb_state *st)
{
	if (st->npend > 0 && pgconn_is_ok(st->conn)) {
		int at;
		char err[256];
		(void)pgconn_pipe_drain(st->conn, &at, err, sizeof(err));
	}
	st->npend = 0;
	st->nfail = 0;
	st->active = 0;
	st->window_open = 0;
	st->release_pending = 0;
	log_clear(st);
}

void ldb_free(ldb_state *st)
{
	if (!st)
		return;
	free(st->log);
	free(st->arena);
	free(st->pend);
	free(st->fail);
	free(st);
}

int ldbwin_in_batch(const ldb_state *st)
{
	return st->active;
}

pgconn *ldbwin_conn(const ldb_state *st)
{
	return st->conn;
}

void ldbwin_break(ldb_state *st)
{
	st->broken = 1;
}

ldbwin_status ldbwin_wait_sends(ldb_state *st, char *err, size_t errlen)
{
	if (drain(st, err, errlen) != 0) {
		ldbwin_fail_event(st, LDB_ERR_SEND, err);
		return LDBWIN_UNUSABLE;
	}
	return st->sql_failed ? LDBWIN_EVENT_FAILED : LDBWIN_OK;
}

int ldbwin_exec_begin(ldb_state *st, const char *pre[2])
{
	int npre = 0;
	if (!st->window_open) {
		if (st->release_pending)
			pre[npre++] = "release savepoint " WINDOW;
		pre[npre++] = "savepoint " WINDOW;
	}
	st->statements++;
	st->event_stmts++;
	st->event_exec = 1;
	return npre;
}

void ldbwin_exec_end(ldb_state *st, int npre, int failed_at)
{
	if (npre > 0 && (failed_at == -1 || failed_at >= npre)) {
		st->release_pending = 0;
		st->window_open = 1;
	}
}

/* The connection refused a command of ours or the event's. */
static ldbwin_status send_broken(ldb_state *st, char *err, size_t errlen)
{
	pgconn_result_error(st->conn, NULL, err, errlen);
	ldbwin_fail_event(st, LDB_ERR_SEND, err);
	return LDBWIN_UNUSABLE;
}

ldbwin_status ldbwin_send_record(ldb_state *st, const char *sql, int nparams,
                                 const char *const *params, char *err, size_t errlen)
{
	if (window_open(st) != 0)
		return send_broken(st, err, errlen);
	if (!st->event_unlogged && (st->nlog >= LDBWIN_LOG_MAX || st->used >= LDBWIN_ARENA_MAX)) {
		/* the events before this one are checked now, so that only this
		 * one can fail from here on: it needs no log, it is undone whole */
		ldbwin_status s = ldbwin_wait_sends(st, err, errlen);
		if (s != LDBWIN_OK)
			return s;
		st->event_unlogged = 1;
	}
	if (!st->event_unlogged && log_add(st, sql, nparams, params) != 0)
		return LDBWIN_NO_MEMORY;
	st->statements++;
	st->event_stmts++;
	return LDBWIN_OK;
}

ldbwin_status ldbwin_send_queue(ldb_state *st, const char *sql, int nparams,
                                const char *const *params, char *err, size_t errlen)
{
	if (pipe_send(st, st->event, sql, nparams, params) != 0)
		return send_broken(st, err, errlen);
	if (st->npend >= LDBWIN_PIPE_MAX)
		return ldbwin_wait_sends(st, err, errlen);
	return LDBWIN_OK;
}

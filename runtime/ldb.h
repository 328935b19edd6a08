/*
 * ldb.h - the `db` handle a script gets, on the batch's connection and
 * transaction:
 *   db:exec(sql, ...)  runs a statement and returns its rows;
 *   db:send(sql, ...)  queues a write without waiting for it (libpq
 *                      pipeline mode); its error, if any, is found later
 *                      and makes its event an error all the same.
 * An event's statements are undone together when the event does not end
 * OK.  For that the handle keeps one savepoint, the window, open across
 * events: a window holds the sends of events that ended OK (kept in a log)
 * and the statements of the event being run.  When a statement fails, the
 * window is rolled back and the log sent again without the failed event.
 * An event that used db:exec closes the window when it ends (its results
 * were seen, so it cannot be sent again); so do the runtime's own
 * statements (ldb_close).  Used by lbridge.c (the Lua side) and consumer.c
 * (event and batch boundaries).
 */
#ifndef PGQLUA_LDB_H
#define PGQLUA_LDB_H

#include "pgconn.h"
#include <lua.h>
#include <stddef.h>

#define LDB_HOOK (-1)      /* the "event" of on_batch_start/on_batch_end */

typedef struct ldb_sent ldb_sent;
typedef struct ldb_failure ldb_failure;

typedef struct ldb_state {
	pgconn *conn;
	int active;            /* inside a batch: the handle may be used */
	int window_open;       /* the window's savepoint is taken */
	int release_pending;   /* a closed window's savepoint awaits RELEASE */
	int event;             /* row of the event being run, or LDB_HOOK */
	int event_stmts;       /* statements this event ran or sent */
	int event_exec;        /* this event used db:exec */
	int event_unlogged;    /* this event's later sends are not in the log */
	int event_undone;      /* this event's statements were rolled back already */
	int sql_failed;        /* a statement of this event failed */
	int broken;            /* our savepoint failed: the batch must roll back */
	char sql_error[512];
	long statements;       /* statements run in this batch */
	/* the window's log of sends: what a replay sends again */
	ldb_sent *log;
	int nlog, caplog;
	char *arena;           /* their SQL text and parameters */
	size_t used, cap;
	/* statements in the pipeline since its last sync: the event of each */
	int *pend;
	int npend, cappend;
	/* events found failed after they ended, for consumer.c */
	ldb_failure *fail;
	int nfail, capfail;
} ldb_state;

/* Register the handle's metatable in L; rules is the stack index of the
 * pgqlua.rules table (the refusal text, parameter text). */
void ldb_open_lib(lua_State *L, int rules);

/* Push a new handle bound to st (one per Lua state); null_ref is the
 * registry ref of pgq.null in L. */
void ldb_push(lua_State *L, ldb_state *st, int null_ref);

/* Event boundaries.  event is the event's row in its chunk, or LDB_HOOK.
 * ldb_event_end keeps the event's writes (keep) or undoes them, and with
 * close also closes the window (as ldb_close).  Returns 0; 1 when a send
 * of this event turned out to have failed (err says why: the writes were
 * undone and the event is an error); -1 with err when the transaction is
 * unusable. */
void ldb_event_begin(ldb_state *st, int event);
int ldb_event_end(ldb_state *st, int keep, int close, char *err, size_t errlen);

/* Wait for every send and close the window, so that the runtime can use
 * the connection.  Events whose sends failed are undone and queued for
 * ldb_take_failure.  0, or -1 with err. */
int ldb_close(ldb_state *st, char *err, size_t errlen);

/* Events found failed after they ended (by a db:exec's wait, or an event
 * end that closed the window): 1 with the event's row and the error, 0
 * when there is none left.  ldb_failures_pending: is one queued? */
int ldb_take_failure(ldb_state *st, int *event, char *msg, size_t msglen);
int ldb_failures_pending(const ldb_state *st);

/* The transaction the handle works in was committed (remote event mode):
 * no savepoint of ours exists any more. */
void ldb_after_commit(ldb_state *st);

/* Batch boundaries: the handle works only between these.  ldb_batch_end
 * drops whatever is still in the pipeline (the batch is ending or rolled
 * back). */
void ldb_batch_begin(ldb_state *st, pgconn *conn);
void ldb_batch_end(ldb_state *st);

/* Free the log's memory (the consumer is closing). */
void ldb_free(ldb_state *st);

#endif

/*
 * ldbwin.h - the savepoint window behind the `db` handle, without Lua:
 * the window's savepoint, the log of sends of events that ended OK, the
 * replay of that log without a failed event, and the queue of events found
 * failed after they ended.  The batch code (batch.c, target.c) calls the
 * ldb_* functions at event and batch boundaries; ldb.c (the Lua side)
 * calls the ldbwin_* functions for each statement a script runs.
 *
 * A window is one savepoint kept open across events.  It holds the sends
 * of events that ended OK (kept in a log) and the statements of the event
 * being run.  When a statement fails, the window is rolled back and the
 * log sent again without the failed event.  An event that used db:exec
 * closes the window when it ends (its results were seen, so it cannot be
 * sent again); so do the runtime's own statements (ldb_close), and an
 * event end once LDBWIN_WINDOW_MAX sends are logged.
 */
#ifndef PGQLUA_LDBWIN_H
#define PGQLUA_LDBWIN_H

#include "pgconn.h"
#include <stddef.h>

/* A statement's error as the window keeps it: a server message (up to
 * PGCONN_ERR_LEN / 2) with a "db:send: " prefix fits. */
#define LDBWIN_MSG_LEN 640

#define LDB_HOOK (-1)      /* the "event" of on_batch_start/on_batch_end */

#define LDBWIN_SAVEPOINT "pgqlua_window"
#define LDBWIN_WINDOW_MAX 1000         /* sends in a window: closed at the next event end */
#define LDBWIN_LOG_MAX 10000           /* sends kept for a replay (one event may go past) */
#define LDBWIN_ARENA_MAX (16u << 20)   /* and the bytes they may take */
#define LDBWIN_PIPE_MAX 1000           /* statements in flight before a sync */

/* The handle's state: one per consumer, opaque.  Functions that return
 * int return 0 on success and -1 with err when the transaction is unusable,
 * unless they say otherwise. */
typedef struct ldb_state ldb_state;

/* Where the failure of the event being run came from. */
typedef enum ldb_error_source {
	LDB_ERR_NONE = 0,
	LDB_ERR_EXEC,          /* a db:exec failed and the script went on */
	LDB_ERR_SEND           /* a db:send of this event failed */
} ldb_error_source;

ldb_state *ldb_new(void);
void ldb_free(ldb_state *st);

/* Did a statement of the event being run fail?  *msg (if not NULL) gets
 * its error text while the event runs. */
ldb_error_source ldb_event_error(const ldb_state *st, const char **msg);

/* Statements the event being run has run or sent so far. */
int ldb_event_statements(const ldb_state *st);

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

/* ---- for the Lua side (ldb.c): one statement of the event being run ---- */

/* What a step for a statement came to. */
typedef enum ldbwin_status {
	LDBWIN_OK = 0,
	LDBWIN_EVENT_FAILED,   /* a send of this event failed: ldb_event_error says why */
	LDBWIN_NO_MEMORY,      /* the send was not taken; the event is not marked */
	LDBWIN_UNUSABLE        /* err says why; the event is marked failed with err */
} ldbwin_status;

/* Between ldb_batch_begin and ldb_batch_end: the handle may be used. */
int ldbwin_in_batch(const ldb_state *st);
/* The batch's connection (NULL before the first batch). */
pgconn *ldbwin_conn(const ldb_state *st);

/* Mark the event being run failed, from src, with msg (later statements
 * are refused, its writes undone at its end). */
void ldbwin_fail_event(ldb_state *st, ldb_error_source src, const char *msg);

/* A savepoint command of ours failed: the transaction is unusable, every
 * later event end and ldb_close return -1 with the event's error. */
void ldbwin_break(ldb_state *st);

/* Wait for every send in the pipeline (failed events undone, ended ones
 * queued): LDBWIN_OK, LDBWIN_EVENT_FAILED or LDBWIN_UNUSABLE. */
ldbwin_status ldbwin_wait_sends(ldb_state *st, char *err, size_t errlen);

/* A db:exec of the event being run: counts it and fills pre[0..1] with
 * the commands to run before it in the same round trip (the RELEASE of
 * the last window, the savepoint of a new one); returns how many. */
int ldbwin_exec_begin(ldb_state *st, const char *pre[2]);
/* Its round trip is over: failed_at as pgconn_exec_after reports it; the
 * window is open when the npre commands before the statement ran. */
void ldbwin_exec_end(ldb_state *st, int npre, int failed_at);

/* A db:send of the event being run, in two steps so that the caller can
 * trace it between them: ldbwin_send_record opens the window, keeps the
 * send in the log for a replay and counts it; ldbwin_send_queue puts it in
 * the pipeline (waiting once LDBWIN_PIPE_MAX statements are in flight). */
ldbwin_status ldbwin_send_record(ldb_state *st, const char *sql, int nparams,
                                 const char *const *params, char *err, size_t errlen);
ldbwin_status ldbwin_send_queue(ldb_state *st, const char *sql, int nparams,
                                const char *const *params, char *err, size_t errlen);

/* The refusal text for transaction control (from pgqlua.rules). */
void ldbwin_set_refusal(const char *text);
const char *ldbwin_refusal(void);

#endif

/*
 * ldb.h - the `db` handle a script gets: db:exec(sql, ...) on the batch's
 * connection and transaction, with a savepoint taken lazily the first time
 * an event touches the database.  Used by lbridge.c (the Lua side) and
 * consumer.c (event and batch boundaries).
 */
#ifndef PGQLUA_LDB_H
#define PGQLUA_LDB_H

#include "pgconn.h"
#include <lua.h>

typedef struct ldb_state {
	pgconn *conn;
	int active;            /* inside a batch: the handle may be used */
	int savepoint_open;    /* this event took a savepoint */
	int release_pending;   /* an earlier event's savepoint awaits RELEASE */
	int sql_failed;        /* a statement failed in this event */
	char sql_error[512];
	long statements;       /* statements run in this batch */
} ldb_state;

/* Register the handle's metatable in L. */
void ldb_open_lib(lua_State *L);

/* Push a new handle bound to st (one per Lua state); null_ref is the
 * registry ref of pgq.null in L. */
void ldb_push(lua_State *L, ldb_state *st, int null_ref);

/* Event boundaries: reset per-event flags; then keep or roll back the
 * event's writes.  0 or -1 with err (the transaction is then unusable). */
void ldb_event_begin(ldb_state *st);
int ldb_event_end(ldb_state *st, int keep, char *err, size_t errlen);

/* The transaction the handle works in was committed (remote event mode):
 * no savepoint of ours exists any more. */
void ldb_after_commit(ldb_state *st);

/* Batch boundaries: the handle works only between these. */
void ldb_batch_begin(ldb_state *st, pgconn *conn);
void ldb_batch_end(ldb_state *st);

#endif

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
 * statements (ldb_close).  The window, its log and replay are ldbwin.c
 * (declared in ldbwin.h, included here for the event and batch boundaries
 * batch.c calls); this header adds the Lua side lbridge.c uses.
 */
#ifndef PGQLUA_LDB_H
#define PGQLUA_LDB_H

#include "ldbwin.h"
#include <lua.h>

/* Register the handle's metatable in L; rules is the stack index of the
 * pgqlua.rules table (the refusal text, parameter text). */
void ldb_open_lib(lua_State *L, int rules);

/* Push a new handle bound to st (one per Lua state); null_ref is the
 * registry ref of pgq.null in L. */
void ldb_push(lua_State *L, ldb_state *st, int null_ref);

#endif

/*
 * fake_pgconn.h - a test double of the pgconn_* functions ldbwin.c calls,
 * with no server: it keeps a log of the commands sent, runs them at the
 * sync (a savepoint stack, a list of the writes in effect, an aborted
 * transaction until ROLLBACK TO) and fails the statements a test names.
 * Our savepoint commands show as SAVEPOINT, RELEASE and ROLLBACK_TO.
 */
#ifndef PGQLUA_FAKE_PGCONN_H
#define PGQLUA_FAKE_PGCONN_H

#include "pgconn.h"

pgconn *fake_pgconn_new(void);
/* The next run of the command shown as `sql` fails (23505). */
void fake_pgconn_fail(pgconn *c, const char *sql);
/* Pipelined statements that may be prepared take two commands (a Parse). */
void fake_pgconn_prepare(pgconn *c, int on);
/* The connection is lost: sends and syncs fail. */
void fake_pgconn_lose(pgconn *c);
/* The transaction was committed (the writes stay, the savepoints go). */
void fake_pgconn_commit(pgconn *c);
/* pgconn_exec_after in one round trip: pre then sql, run at once;
 * returns failed_at as pgconn.h documents it. */
int fake_pgconn_exec(pgconn *c, const char *const *pre, int npre, const char *sql,
                     char *err, size_t errlen);
/* Every command sent, space separated, with SYNC where results were read. */
const char *fake_pgconn_sent(const pgconn *c);
/* The writes in effect, comma separated. */
const char *fake_pgconn_applied(pgconn *c);

#endif

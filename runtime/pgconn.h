/*
 * pgconn.h - one libpq connection: connect with a safe name for logs,
 * execute with parameters, report errors as "SQLSTATE message" on one line.
 * Used by pgq.c, failed.c, ldb.c, ldbwin.c and the consumer loop.
 */
#ifndef PGQLUA_PGCONN_H
#define PGQLUA_PGCONN_H

#include <libpq-fe.h>
#include <stddef.h>

typedef struct pgconn pgconn;

/* The size of an error buffer for one message from this module (one
 * line, SQLSTATE and text). */
#define PGCONN_ERR_LEN 1024

/* pgconn_exec_after's *failed_at when the connection failed before every
 * result was read: whether the commands after the last one seen ran is
 * unknown. */
#define PGCONN_LOST (-2)

/* The error of a statement that started COPY (pgqlua.rules.COPY_REFUSED). */
#define PGCONN_COPY_REFUSED "COPY is not supported"

/* Keep the conninfo; do not connect.  NULL on out of memory.  Every
 * connection made from it runs with the session settings the runtime
 * relies on, whatever the server, database, role or environment
 * (PGDATESTYLE, PGTZ, PGCLIENTENCODING) says: DateStyle ISO, IntervalStyle
 * postgres, client_encoding UTF8 and TimeZone timezone (NULL: UTC). */
pgconn *pgconn_new(const char *conninfo, const char *timezone);
void pgconn_free(pgconn *c);

/* Connect (closing any old connection).  0 or -1 with a one-line err that
 * never contains the password. */
int pgconn_connect(pgconn *c, char *err, size_t errlen);
/* Close the connection, if open; why goes to the debug log (the caller
 * warns about a lost connection in its own words). */
void pgconn_close(pgconn *c, const char *why);
int pgconn_is_ok(const pgconn *c);
PGconn *pgconn_pg(pgconn *c);

/* Ask the server to cancel the running statement (async-signal-safe). */
void pgconn_cancel(pgconn *c);

/* "host=... port=... dbname=... user=..." without the password. */
const char *pgconn_safe_name(const pgconn *c);

/* Check a conninfo's syntax without echoing it; 0 or -1 with err. */
int pgconn_check_conninfo(const char *conninfo, char *err, size_t errlen);

/* Run sql with text parameters (NULL entries are SQL NULL).  Returns the
 * result of a successful command or query; NULL with err otherwise.  The
 * SQLSTATE of the last failure is kept for pgconn_last_sqlstate. */
PGresult *pgconn_exec(pgconn *c, const char *sql, int nparams,
                      const char *const *params, char *err, size_t errlen);

/* Run the parameterless commands pre[0..npre-1], then sql with params, in
 * one round trip (libpq pipeline mode).  Returns sql's result, or NULL
 * with err.  *failed_at is -1 when nothing failed, the index of the first
 * command that failed (npre for sql; the server skipped the ones after
 * it), or PGCONN_LOST. */
PGresult *pgconn_exec_after(pgconn *c, const char *const *pre, int npre, const char *sql,
                            int nparams, const char *const *params, int *failed_at,
                            char *err, size_t errlen);

/* Run DDL for `pgqlua install` in one transaction under an advisory lock
 * (two installs at once are safe), notices quiet; rolled back on error. */
int pgconn_install(pgconn *c, const char *sql, char *err, size_t errlen);

/* Pipelined statements (libpq pipeline mode): pgconn_pipe_send queues a
 * statement without waiting (entering pipeline mode if needed; prepared
 * if it may be, see pgconn_set_prepare) and returns how many commands
 * that took (2 when the statement is prepared first),
 * or -1 when the connection cannot take it.  pgconn_pipe_drain syncs,
 * reads the result of every command sent since the last drain, and leaves
 * pipeline mode.  *failed_at is the index of the first command that failed
 * (err says why; the server skipped the ones after it) or -1.
 * Returns -1 with err when the connection failed. */
int pgconn_pipe_send(pgconn *c, const char *sql, int nparams, const char *const *params, int prepare);
int pgconn_pipe_drain(pgconn *c, int *failed_at, char *err, size_t errlen);

/* Keep statements prepared (server-side, per connection) instead of
 * parsing them each time: pgconn_exec_after's main statement and
 * pgconn_pipe_send's when it allows it. */
void pgconn_set_prepare(pgconn *c, int on);

/* One statement in flight while the caller does other work: sent by
 * pgconn_send_async, its rows taken by pgconn_take_async (NULL with err if
 * it failed).  Any other use of the connection first reads its result and
 * keeps it for pgconn_take_async; pgconn_drop_async forgets it. */
int pgconn_send_async(pgconn *c, const char *sql);
PGresult *pgconn_take_async(pgconn *c, char *err, size_t errlen);
void pgconn_drop_async(pgconn *c);
/* The error of the statement in flight when it has been read and failed
 * (later statements of its transaction then fail too); NULL otherwise. */
const char *pgconn_async_error(const pgconn *c);

/* Run a simple multi-statement command and keep the results that carry
 * rows (SELECT, FETCH), in order, up to max of them.  Returns how many
 * were kept, or -1 with err (nothing kept). */
int pgconn_exec_rows(pgconn *c, const char *sql, PGresult **out, int max, char *err, size_t errlen);

/* Run a simple (possibly multi-statement) command; 0 or -1 with err. */
int pgconn_cmd(pgconn *c, const char *sql, char *err, size_t errlen);

/* Describe a failed result as one line ("42P01 relation ... does not exist"). */
void pgconn_result_error(pgconn *c, const PGresult *res, char *err, size_t errlen);

#endif

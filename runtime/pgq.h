/*
 * pgq.h - the PgQ SQL the runtime speaks: batches, the batch cursor,
 * retries, queue and consumer registration.  No Lua here.
 * Called by the consumer loop and the CLI.
 */
#ifndef PGQLUA_PGQ_H
#define PGQLUA_PGQ_H

#include "pgconn.h"

/* Columns of a batch cursor row: the event's, in pgq.get_batch_cursor
 * order (PGQ_EV_NCOLS of them, what the script sees), then the row's
 * number in the cursor (1, 2, ...), which shows whether anything moved or
 * closed it.  After the last event comes an end marker: a row whose other
 * columns are all NULL. */
enum pgq_ev_col {
	PGQ_EV_ID = 0, PGQ_EV_TIME, PGQ_EV_TXID, PGQ_EV_RETRY, PGQ_EV_TYPE, PGQ_EV_DATA,
	PGQ_EV_EXTRA1, PGQ_EV_EXTRA2, PGQ_EV_EXTRA3, PGQ_EV_EXTRA4, PGQ_EV_NCOLS,
	PGQ_EV_ROW = PGQ_EV_NCOLS, PGQ_CURSOR_NCOLS,
	PGQ_EV_PART = PGQ_CURSOR_NCOLS     /* a joint batch's rows: the event's partition */
};

/* ev_time of row `row` as it goes back to the server (retries, the
 * failed-event table): the text the runtime's session printed in ISO 8601
 * with a numeric offset, which PostgreSQL reads back to the microsecond in
 * any DateStyle and TimeZone.  NULL, with err, when the text is not ISO
 * 8601 (a script changed the session's DateStyle): never a guess. */
const char *pgq_event_time(const PGresult *res, int row, char *err, size_t errlen);

typedef struct pgq_batch {
	long long batch_id;
	long long cur_tick_id;
	long long prev_tick_id;
	char cur_tick_time[48];
	char prev_tick_time[48];
	double lag;            /* seconds since the batch's last tick */
	char *sql;             /* pgq.batch_event_sql: the batch's query (malloc'd) */
	long long sub_id;      /* its subscription (the owner of its retried events); 0: not read */
} pgq_batch;

typedef struct pgq_batch_knobs {
	int min_count;        /* <= 0: unset */
	double min_interval;  /* < 0: unset */
	double min_lag;       /* < 0: unset */
} pgq_batch_knobs;

/* What to tell the user when the queue, the consumer or schema pgqlua is
 * missing. */
#define PGQ_INSTALL_HINT "run `pgqlua install CONFIG`"

typedef enum pgq_result {
	PGQ_DONE = 0,
	PGQ_NONE,             /* next_batch: nothing ready */
	PGQ_ERROR
} pgq_result;

/* pgq.next_batch_custom in its own transaction (autocommit), with the
 * batch's event query; the caller frees out->sql. */
pgq_result pgq_next_batch(pgconn *c, const char *queue, const char *consumer,
                          const pgq_batch_knobs *knobs, pgq_batch *out,
                          char *err, size_t errlen);

/* BEGIN, open the batch cursor and return its first fetch_size rows, in
 * one round trip; NULL with err.  where (NULL: none) is an SQL boolean
 * expression over the event's columns (ev_id, ev_type, ev_data,
 * ev_extra1..4, ...): only the rows it holds for are read, numbered and
 * sent; the others never leave the server.  With part (a joint batch,
 * pgq_joint_sql), each row also carries that int4 expression's value
 * (PGQ_EV_PART) and where may name it as pgqlua_part. */
PGresult *pgq_open_batch(pgconn *c, const pgq_batch *b, const char *where, const char *part, int fetch_size,
                         char *err, size_t errlen);

/* Is where a valid filter for pgq_open_batch: one boolean SQL expression
 * over the event's columns?  Planned on the server against no rows.  0,
 * or -1 with err (the server's SQLSTATE and message). */
int pgq_check_filter(pgconn *c, const char *where, char *err, size_t errlen);

/* Ask for the next fetch_size rows of the open batch cursor without
 * waiting; pgq_fetch_take returns them.  0 or -1. */
int pgq_fetch_async(pgconn *c, int fetch_size);

/* The batch cursor's rows as the consumer takes them, chunk by chunk: the
 * script's SQL runs on the same connection and could close or move the
 * cursor (CLOSE, MOVE, FETCH, also through a PL/pgSQL refcursor), which
 * would skip events silently.  Each row carries its number and the last
 * one an end marker: a gap, a missing end or a foreign cursor is caught
 * here.  Zero it, with fetch_size set, before a batch's first chunk. */
typedef struct pgq_cursor_guard {
	int fetch_size;          /* rows asked for per FETCH */
	int joint;               /* a joint batch's cursor: PGQ_EV_PART follows */
	long long rows;          /* events seen so far */
	int chunks;              /* chunks checked so far */
	char span[2][64];        /* "events A to B" of the last two chunks */
} pgq_cursor_guard;

/* Check the chunk res that the consumer is about to process; *n is its
 * number of events (the end marker left out), *more whether the cursor
 * has more.  0, or -1 with err naming the events during which the
 * script's SQL must have touched the cursor (the batch must be rolled
 * back). */
int pgq_cursor_check(pgq_cursor_guard *g, const PGresult *res, int *n, int *more, char *err,
                     size_t errlen);

/* pgconn_take_async for a pgq_fetch_async: the next chunk, or NULL with
 * err (a closed cursor is named as such). */
PGresult *pgq_fetch_take(pgconn *c, const pgq_cursor_guard *g, char *err, size_t errlen);

/* After any failure inside a batch (g NULL: none open): if the fetch
 * read ahead failed because the script closed the cursor (the statements
 * after it then fail too), replace err with that reason and return 1. */
int pgq_cursor_explain(pgconn *c, const pgq_cursor_guard *g, char *err, size_t errlen);

/* pgq.event_retry_raw for row `row` of a cursor result: the event comes back
 * to this consumer after `delay` seconds with ev_retry + 1. */
int pgq_retry_event(pgconn *c, const char *queue, const char *consumer,
                    const PGresult *res, int row, double delay, char *err, size_t errlen);

/* What became of a batch's COMMIT. */
typedef enum pgq_commit {
	PGQ_COMMITTED = 0,
	PGQ_NOT_COMMITTED,    /* a statement before it failed, or it did: rolled back */
	PGQ_COMMIT_UNKNOWN    /* the connection was lost on the way: the server
	                       * rolls back unless the COMMIT got there first */
} pgq_commit;

/* Close the cursor, pgq.finish_batch, COMMIT, then pgq.next_batch_custom
 * for the next batch, all in one round trip.  A batch that pgq.finish_batch
 * does not find open (another instance of the consumer finished it) is
 * rolled back, never committed.  Returns what became of the COMMIT (err
 * says why when not PGQ_COMMITTED); *next_res is next_batch's result
 * (PGQ_ERROR with err when it failed after the commit).  With next NULL,
 * only the batch is finished. */
pgq_commit pgq_finish_and_next(pgconn *c, long long batch_id, const char *queue,
                               const char *consumer, const pgq_batch_knobs *knobs, pgq_batch *next,
                               pgq_result *next_res, char *err, size_t errlen);

/* A joint batch: the batches of several PgQ consumers of one queue
 * (partitions of a group, held by one session) that cover the same ticks,
 * read through one cursor and finished in one transaction.
 * pgq_next_batches is pgq.next_batch_custom for each of n consumers
 * (names: a Postgres array literal) in one statement; out[i] is consumer
 * i's batch (batch_id 0: none), with its sub_id, and the query (sql) of
 * one of them, the lead (*lead): the batch of the earliest ticks.
 * PGQ_DONE some batch, PGQ_NONE none, PGQ_ERROR with err; the caller frees
 * the lead's sql. */
pgq_result pgq_next_batches(pgconn *c, const char *queue, const char *names, int n, const pgq_batch_knobs *k,
                            pgq_batch *out, int *lead, char *err, size_t errlen);
/* The lead's query (sql, of subscription lead_sub) widened to the retried
 * events of every subscription of subs; malloc'd; NULL when out of memory
 * or when sql is not in the shape PgQ writes (then no joint batch). */
char *pgq_joint_sql(const char *sql, long long lead_sub, const long long *subs, int n);
/* pgq.finish_batch for each of the n batches, then COMMIT, in one round
 * trip; a batch that is not open rolls them all back. */
pgq_commit pgq_finish_batches(pgconn *c, const long long *ids, int n, char *err, size_t errlen);

/* ROLLBACK, ignoring errors (the connection may be gone). */
void pgq_rollback(pgconn *c);

/* After a failure: roll back, and drop a connection that is broken (with
 * a warning) or still in pipeline mode (what is unread on it cannot be
 * trusted). */
void pgq_reset(pgconn *c);

/* Is consumer registered on queue?  PGQ_DONE yes, PGQ_NONE no (err says
 * what is missing), PGQ_ERROR with err. */
pgq_result pgq_check_registered(pgconn *c, const char *queue, const char *consumer,
                                char *err, size_t errlen);

/* Claim queue/consumer for this connection's session (an advisory lock,
 * released when the connection ends): one active instance per consumer,
 * on any machine; in a group, one owner per partition (consumer is the
 * partition's PgQ consumer).  PGQ_DONE claimed, PGQ_NONE another session holds it,
 * PGQ_ERROR with err. */
pgq_result pgq_claim(pgconn *c, const char *queue, const char *consumer, char *err, size_t errlen);

/* Give a claim of pgq_claim up (a group member hands a partition over,
 * between batches).  0 or -1 with err. */
int pgq_release(pgconn *c, const char *queue, const char *consumer, char *err, size_t errlen);

/* Create the queue if missing; returns 1 created, 0 existed, -1 error. */
int pgq_create_queue(pgconn *c, const char *queue, char *err, size_t errlen);
/* 1 newly registered, 0 already, -1 error. */
int pgq_register(pgconn *c, const char *queue, const char *consumer, char *err, size_t errlen);
int pgq_unregister(pgconn *c, const char *queue, const char *consumer, char *err, size_t errlen);

#endif

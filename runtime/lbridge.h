/*
 * lbridge.h - one consumer script in its own lua_State: sandbox, load,
 * the one protected-call path, and mapping of process_event's results.
 * Called by consumer.c; a reload builds a second lb_script beside the first.
 */
#ifndef PGQLUA_LBRIDGE_H
#define PGQLUA_LBRIDGE_H

#include "config.h"
#include "ldb.h"
#include "pgq.h"

typedef struct lb_script lb_script;

typedef enum lb_outcome {
	LB_OK = 0,
	LB_RETRY,
	LB_FAILED,
	LB_ABORT,
	LB_ERROR          /* a Lua error or an invalid return value */
} lb_outcome;

#define LB_MSG_LEN 1024

typedef struct lb_result {
	lb_outcome outcome;
	double delay;         /* LB_RETRY: seconds, < 0 means retry_delay */
	char msg[LB_MSG_LEN]; /* LB_FAILED reason or LB_ERROR message (file:line: ...) */
} lb_result;

/* The folder scripts' require() searches first, the runtime's Lua
 * modules: $PGQLUA_LUA_DIR; else share/pgqlua/lua beside an installed
 * program (any prefix); else the source tree's lua/ (the build tree's
 * program); else the configured install folder. */
const char *lb_lua_dir(void);

/* Seconds the script's top level and init() may run: event_timeout when
 * set, else 30. */
double lb_load_timeout(const config *cfg);

/* New state: sandbox, package.path, pgq table, load and run the script,
 * resolve process_event and the hooks, call init(config).  db is the
 * handle state the script's `db` is bound to.  NULL with err on failure;
 * *out_of_memory (if given) then says whether the process ran out of
 * memory (no lua_memory_limit applies while loading) rather than the
 * script failing. */
lb_script *lb_script_load(const config *cfg, ldb_state *db, int *out_of_memory, char *err,
                          size_t errlen);
void lb_script_free(lb_script *s);

/* Call process_event for row `row` of a batch cursor result. */
void lb_call_event(lb_script *s, const PGresult *res, int row, lb_result *out);

/* The max_retries rule (pgqlua.rules.retries_used_up) for a RETRY or an
 * error of an event delivered `retry` times before: 1 and the reason the
 * event goes to the failed-event table with, or 0 (retry it).  msg: the
 * error, "" for a RETRY. */
int lb_retries_used_up(lb_script *s, long long retry, int max_retries, const char *msg, char *reason,
                       size_t len);

/* Call on_batch_start / on_batch_end if defined; 0 or -1 with err. */
int lb_call_batch_start(lb_script *s, const pgq_batch *b, char *err, size_t errlen);
int lb_call_batch_end(lb_script *s, const pgq_batch *b, char *err, size_t errlen);

/* ---- pgq.http.send: an event's requests settle after its call ---- */

/* Sends of the event at row not settled yet; lb_sends_next_row: the row
 * of some event with sends left, or -1. */
int lb_sends_pending(lb_script *s, int row);
int lb_sends_next_row(lb_script *s);

/* Wait for the sends of the event at row and fold their responses into
 * its result r (pgqlua.http.settle: 2xx keeps it; 408, 429, 5xx and
 * transport errors make it RETRY; other statuses FAILED; on_response may
 * decide), within event_timeout.  The sends are forgotten after. */
void lb_settle_sends(lb_script *s, int row, lb_result *r);

/* Drop every send (the batch ends or rolls back). */
void lb_sends_drop(lb_script *s);

/* Make the running Lua code raise "stopped" at its next instruction
 * (async-signal-safe, as lua.c does for SIGINT).  NULL is fine. */
void lb_interrupt(lb_script *s);

/* Memory the state uses, in bytes. */
size_t lb_memory_used(const lb_script *s);

#endif

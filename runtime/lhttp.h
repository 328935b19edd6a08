/*
 * lhttp.h - the transport behind pgq.http: one libcurl multi handle per
 * script state (connections kept alive and reused across events and
 * batches), a waited request whose wait honours the event's deadline and
 * a stop, and the host functions lua/pgqlua/init.lua calls.  lbridge.c
 * owns one lhttp per lb_script and registers its functions into the
 * script's `pgqlua.host` module; lua/pgqlua/http.lua prepares requests.
 */
#ifndef PGQLUA_LHTTP_H
#define PGQLUA_LHTTP_H

#include "config.h"
#include <lua.h>

typedef struct lhttp lhttp;

/* Asked between slices of a wait: NULL to go on (with *left the seconds
 * to the deadline, < 0 for none), or the error text that ends the wait
 * (the deadline passed, a stop at once was asked for). */
typedef const char *(*lhttp_wait_fn)(void *arg, double *left);

/* NULL when libcurl cannot be set up (err says why). */
lhttp *lhttp_new(const config *cfg, lhttp_wait_fn wait, void *wait_arg, char *err, size_t errlen);
void lhttp_free(lhttp *h);

/* The event being processed (its id goes into Idempotency-Key; its row
 * in the chunk tags its sends), or none. */
void lhttp_set_event(lhttp *h, int in_event, long long ev_id, int row);

/* ---- pgq.http.send: requests that settle after their event's call ---- */

/* Sends of the event at row (row < 0: of every event) not yet forgotten. */
int lhttp_pending(const lhttp *h, int row);

/* The row of the oldest send not forgotten, or -1. */
int lhttp_first_row(const lhttp *h);

/* Drive the transfers until every send of row (row < 0: every send) has
 * ended.  NULL, or the text that ended the wait (deadline, stop). */
const char *lhttp_wait_sends(lhttp *h, int row);

/* Push a list of row's ended sends, each {prep, on_response, res, err}
 * (res a response table, or err libcurl's reason); returns how many.
 * MAY_LJMP */
int lhttp_push_settled(lua_State *L, lhttp *h, int row);

/* Drop row's sends (row < 0: all; in flight ones are abandoned). */
void lhttp_forget(lua_State *L, lhttp *h, int row);

/* Set http_context and http_request in the table at the top of L's stack
 * (the host module). MAY_LJMP */
void lhttp_register(lua_State *L, lhttp *h);

#endif

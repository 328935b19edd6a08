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

/* The event being processed (its id goes into Idempotency-Key), or none. */
void lhttp_set_event(lhttp *h, int in_event, long long ev_id);

/* Set http_context and http_request in the table at the top of L's stack
 * (the host module). MAY_LJMP */
void lhttp_register(lua_State *L, lhttp *h);

#endif

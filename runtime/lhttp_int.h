/*
 * lhttp_int.h - the inside of pgq.http, shared by lhttp.c (the transport:
 * one request, its callbacks and errors, pgq.http.request) and
 * lhttp_send.c (pgq.http.send: requests in flight and their settling) and
 * lmail.c (pgq.mail.send over the same multi handle).  Nothing else
 * includes it.
 */
#ifndef PGQLUA_LHTTP_INT_H
#define PGQLUA_LHTTP_INT_H

#include "lhttp.h"

#include <curl/curl.h>
#include <lauxlib.h>

#define GUARD_MT "pgqlua.http_request"
#define SLICE 0.05               /* seconds between deadline and stop checks */
#define HEADERS_MAX (256 * 1024) /* bytes of response headers */

typedef struct req_guard req_guard;

/* A request of pgq.http.send: in flight, or done and not yet settled. */
typedef struct send_slot {
	req_guard *g;          /* malloc'd: outlives the Lua call */
	int row;               /* the event's row in its chunk */
	int ref;               /* registry ref of {prep, on_response} */
	int done;
	CURLcode rc;
	long status;
} send_slot;

struct lhttp {
	const config *cfg;
	CURLM *multi;
	lhttp_wait_fn wait;
	void *wait_arg;
	int in_event;
	long long ev_id;
	int row;               /* the event's row in its chunk */
	send_slot *sends;
	int nsends, capsends;
	int inflight;
};

typedef struct buf {
	char *p;
	size_t len, cap;
} buf;

struct req_guard {
	lhttp *h;
	CURL *easy;
	struct curl_slist *headers;
	int added;             /* in h->multi */
	buf body, head;
	size_t max_body;
	int over_limit;        /* the body passed http_max_body */
	double timeout;        /* seconds, for the message */
	char errbuf[CURL_ERROR_SIZE];
	size_t up_off;         /* pgq.mail.send: bytes of body uploaded */
	char reply[256];       /* pgq.mail.send: the server's last 4xx/5xx reply */
};

int lhttp_buf_add(buf *b, const char *p, size_t n);
void lhttp_guard_release(req_guard *g);
const char *lhttp_wait_one(lhttp *h, req_guard *g, CURLcode *rc);
void lhttp_push_headers(lua_State *L, const buf *head);
int lhttp_raise_released(lua_State *L, req_guard *g, const char *msg);
/* A new request's guard, pushed on L's stack, with its easy handle; raises
 * `oom` when libcurl has no memory for one.  MAY_LJMP */
req_guard *lhttp_push_guard(lua_State *L, lhttp *h, const char *oom);
void lhttp_push_reason(lua_State *L, req_guard *g, CURLcode rc);
void lhttp_bind_guard(req_guard *g);
const char *lhttp_setup(lua_State *L, req_guard *g);
void lhttp_send_done(lhttp *h, CURL *easy, CURLcode rc);
const char *lhttp_drive(lhttp *h, int most, int row);
int lhttp_send_fn(lua_State *L);
void lmail_register(lua_State *L, lhttp *h);

#endif

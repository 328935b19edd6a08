/*
 * lhttp_send.c - pgq.http.send (see lhttp.h): requests that run while the
 * script goes on, at most http_concurrency at a time, and their settling
 * into the event's outcome.  The transport is lhttp.c's.
 */
#include "lhttp_int.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A send's transfer ended: keep its result, free its connection. */
void lhttp_send_done(lhttp *h, CURL *easy, CURLcode rc)
{
	/* from the newest: the sends still in flight are the last ones added */
	for (int i = h->nsends - 1; i >= 0; i--) {
		send_slot *sl = &h->sends[i];
		if (sl->done || !sl->g || sl->g->easy != easy)
			continue;
		sl->done = 1;
		sl->rc = rc;
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &sl->status);
		curl_multi_remove_handle(h->multi, easy);
		sl->g->added = 0;
		h->inflight--;
		return;
	}
}

/*
 * The sends of one row are next to each other: they are added in the order
 * of the rows, and a chunk's sends are all settled before the next chunk's
 * rows begin.  [*lo, *hi) is row's span (empty when it has none); a
 * binary search, so that a chunk of many events with their sends deferred
 * costs no scan per event.
 */
static void row_span(const lhttp *h, int row, int *lo, int *hi)
{
	int a = 0, b = h->nsends;
	while (a < b) {
		int m = a + (b - a) / 2;
		if (h->sends[m].row < row)
			a = m + 1;
		else
			b = m;
	}
	*lo = a;
	for (b = h->nsends; a < b;) {
		int m = a + (b - a) / 2;
		if (h->sends[m].row <= row)
			a = m + 1;
		else
			b = m;
	}
	*hi = a;
}

/* Drive the transfers until at most `most` sends are in flight (and, with
 * row >= 0, none of that row's).  NULL, or the text that ended the wait. */
const char *lhttp_drive(lhttp *h, int most, int row)
{
	for (;;) {
		CURLMsg *m;
		int queued, running, busy = 0;
		double left = -1, slice = SLICE;
		const char *why;
		curl_multi_perform(h->multi, &running);
		while ((m = curl_multi_info_read(h->multi, &queued)) != NULL)
			if (m->msg == CURLMSG_DONE)
				lhttp_send_done(h, m->easy_handle, m->data.result);
		if (row >= 0) {
			int lo, hi;
			row_span(h, row, &lo, &hi);
			for (int i = lo; i < hi; i++)
				busy |= !h->sends[i].done;
		}
		if (h->inflight <= most && !busy)
			return NULL;
		if (h->wait && (why = h->wait(h->wait_arg, &left)) != NULL)
			return why;
		if (left >= 0 && left < slice)
			slice = left;
		curl_multi_poll(h->multi, NULL, 0, (int)(slice * 1000) + 1, NULL);
	}
}

/*
 * host.http_send(prepared, on_response): the request goes out and the
 * call returns; once http_concurrency are in flight it first waits for
 * one to end.  MAY_LJMP
 */
int lhttp_send_fn(lua_State *L)
{
	lhttp *h = lua_touserdata(L, lua_upvalueindex(1));
	int most = h->cfg->http_concurrency > 0 ? h->cfg->http_concurrency : 16;
	req_guard *g, *owned;
	send_slot *sl;
	const char *why;

	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 2);
	if (!h->in_event)
		return luaL_error(L, "pgq.http.send: only inside process_event (use pgq.http.request in the hooks)");
	if (h->nsends > 0 && h->sends[h->nsends - 1].row > h->row)
		return luaL_error(L, "pgq.http.send: sends of an earlier chunk are not settled (internal error)");
	if ((why = lhttp_drive(h, most - 1, -1)) != NULL)
		return luaL_error(L, "%s", why);
	g = lhttp_push_guard(L, h, "pgq.http.send: out of memory");   /* 3: the guard until it is ours */
	g->max_body = h->cfg->http_max_body > 0 ? (size_t)h->cfg->http_max_body : (size_t)10 << 20;
	if ((why = lhttp_setup(L, g)) != NULL)
		return lhttp_raise_released(L, g, why);
	lua_settop(L, 3);
	if (h->nsends == h->capsends) {
		int cap = h->capsends ? h->capsends * 2 : 64;
		send_slot *n = realloc(h->sends, sizeof(*n) * (size_t)cap);
		if (!n)
			return lhttp_raise_released(L, g, "pgq.http.send: out of memory");
		h->sends = n;
		h->capsends = cap;
	}
	if (!(owned = malloc(sizeof(*owned))))
		return lhttp_raise_released(L, g, "pgq.http.send: out of memory");
	lua_createtable(L, 2, 0);                    /* 4: {prep, on_response} */
	lua_pushvalue(L, 1);
	lua_rawseti(L, 4, 1);
	lua_pushvalue(L, 2);
	lua_rawseti(L, 4, 2);
	sl = &h->sends[h->nsends];
	memset(sl, 0, sizeof(*sl));
	sl->ref = luaL_ref(L, LUA_REGISTRYINDEX);
	/* from here nothing raises: the guard's contents move to C */
	*owned = *g;
	memset(g, 0, sizeof(*g));
	lhttp_bind_guard(owned);
	sl->g = owned;
	sl->row = h->row;
	h->nsends++;
	if (curl_multi_add_handle(h->multi, owned->easy) != CURLM_OK) {
		sl->done = 1;
		sl->rc = CURLE_FAILED_INIT;
	} else {
		owned->added = 1;
		h->inflight++;
	}
	curl_multi_perform(h->multi, &most);
	return 0;
}

int lhttp_pending(const lhttp *h, int row)
{
	int lo, hi;
	if (!h || row < 0)
		return h ? h->nsends : 0;
	row_span(h, row, &lo, &hi);
	return hi - lo;
}

int lhttp_first_row(const lhttp *h)
{
	return h && h->nsends > 0 ? h->sends[0].row : -1;
}

const char *lhttp_wait_sends(lhttp *h, int row)
{
	return lhttp_drive(h, row < 0 ? 0 : h->inflight, row);
}

/* Push the outcome of send i as {prep, on_response, res or false, err}. MAY_LJMP */
static void push_send(lua_State *L, send_slot *sl)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, sl->ref);
	if (sl->rc == CURLE_OK) {
		lua_createtable(L, 0, 3);
		lua_pushinteger(L, sl->status);
		lua_setfield(L, -2, "status");
		lhttp_push_headers(L, &sl->g->head);
		lua_setfield(L, -2, "headers");
		lua_pushlstring(L, sl->g->body.p ? sl->g->body.p : "", sl->g->body.len);
		lua_setfield(L, -2, "body");
		lua_rawseti(L, -2, 3);
	} else {
		lhttp_push_reason(L, sl->g, sl->rc);
		lua_rawseti(L, -2, 4);
	}
}

int lhttp_push_settled(lua_State *L, lhttp *h, int row)
{
	int n = 0, lo, hi;
	lua_newtable(L);
	row_span(h, row, &lo, &hi);
	for (int i = lo; i < hi; i++) {
		send_slot *sl = &h->sends[i];
		if (!sl->done)
			continue;
		push_send(L, sl);
		lua_rawseti(L, -2, ++n);
	}
	return n;
}

void lhttp_forget(lua_State *L, lhttp *h, int row)
{
	int lo = 0, hi;
	if (!h)
		return;
	if (row < 0)
		hi = h->nsends;
	else
		row_span(h, row, &lo, &hi);
	if (lo == hi)
		return;
	for (int i = lo; i < hi; i++) {
		send_slot *sl = &h->sends[i];
		if (sl->g) {
			lhttp_guard_release(sl->g);
			free(sl->g);
		}
		if (L)
			luaL_unref(L, LUA_REGISTRYINDEX, sl->ref);
		if (!sl->done)
			h->inflight--;
	}
	memmove(h->sends + lo, h->sends + hi, sizeof(*h->sends) * (size_t)(h->nsends - hi));
	h->nsends -= hi - lo;
}

/*
 * lhttp.c - pgq.http's transport on libcurl (see lhttp.h).  A request's
 * easy handle, header list and buffers live in a guard userdata whose
 * __gc releases them, so a Lua error at any point leaks nothing; the
 * normal paths release them before returning or raising.
 */
#include "lhttp_int.h"
#include "log.h"

#include <curl/curl.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


int lhttp_buf_add(buf *b, const char *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *q;
		while (cap < b->len + n + 1)
			cap *= 2;
		q = realloc(b->p, cap);
		if (!q)
			return -1;
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

void lhttp_guard_release(req_guard *g)
{
	if (g->easy) {
		if (g->added)
			curl_multi_remove_handle(g->h->multi, g->easy);
		curl_easy_cleanup(g->easy);
	}
	g->easy = NULL;
	g->added = 0;
	curl_slist_free_all(g->headers);
	g->headers = NULL;
	free(g->body.p);
	free(g->head.p);
	memset(&g->body, 0, sizeof(g->body));
	memset(&g->head, 0, sizeof(g->head));
}

static int guard_gc(lua_State *L)
{
	lhttp_guard_release(luaL_checkudata(L, 1, GUARD_MT));
	return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
	req_guard *g = ud;
	size_t len = size * n;
	if (g->body.len + len > g->max_body) {
		g->over_limit = 1;
		return 0;
	}
	return lhttp_buf_add(&g->body, p, len) == 0 ? len : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
	req_guard *g = ud;
	size_t len = size * n;
	/* a new status line (after a redirect or a 100 Continue): its headers
	 * replace the earlier ones */
	if (len >= 5 && memcmp(p, "HTTP/", 5) == 0)
		g->head.len = 0;
	if (g->head.len + len > HEADERS_MAX)
		return 0;
	return lhttp_buf_add(&g->head, p, len) == 0 ? len : 0;
}

lhttp *lhttp_new(const config *cfg, lhttp_wait_fn wait, void *wait_arg, char *err, size_t errlen)
{
	static int global_done;
	lhttp *h;

	if (!global_done) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			snprintf(err, errlen, "libcurl could not be initialised");
			return NULL;
		}
		global_done = 1;
	}
	h = calloc(1, sizeof(*h));
	if (!h || !(h->multi = curl_multi_init())) {
		free(h);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	/* keep a connection for every send that may be in flight */
	curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS,
	                  (long)(cfg->http_concurrency > 4 ? cfg->http_concurrency : 4));
	h->cfg = cfg;
	h->wait = wait;
	h->wait_arg = wait_arg;
	return h;
}

void lhttp_free(lhttp *h)
{
	if (!h)
		return;
	lhttp_forget(NULL, h, -1);
	free(h->sends);
	curl_multi_cleanup(h->multi);
	free(h);
}

void lhttp_set_event(lhttp *h, int in_event, long long ev_id, int row)
{
	if (h) {
		h->in_event = in_event;
		h->ev_id = ev_id;
		h->row = row;
	}
}

/* host.http_context(): {key = Idempotency-Key or nil, timeout = http_timeout} */
static int http_context(lua_State *L)
{
	lhttp *h = lua_touserdata(L, lua_upvalueindex(1));
	lua_createtable(L, 0, 2);
	if (h->in_event && h->cfg->http_idempotency_key) {
		lua_pushfstring(L, "%s/%s/%I", h->cfg->queue_name, h->cfg->consumer_name,
		                (LUAI_UACINT)h->ev_id);
		lua_setfield(L, -2, "key");
	}
	lua_pushnumber(L, h->cfg->http_timeout > 0 ? h->cfg->http_timeout : 30);
	lua_setfield(L, -2, "timeout");
	return 1;
}

/* Push the response headers (lower-case names; repeated ones joined with
 * ", ") as a table. MAY_LJMP */
void lhttp_push_headers(lua_State *L, const buf *head)
{
	const char *p = head->p, *end = head->p ? head->p + head->len : NULL;
	int t;
	lua_newtable(L);
	t = lua_gettop(L);
	while (p && p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *line_end = eol ? eol : end, *colon, *v, *ve;
		luaL_Buffer name;
		if (line_end > p && line_end[-1] == '\r')
			line_end--;
		colon = memchr(p, ':', (size_t)(line_end - p));
		if (colon && colon > p) {
			luaL_buffinit(L, &name);
			for (const char *q = p; q < colon; q++)
				luaL_addchar(&name, (*q >= 'A' && *q <= 'Z') ? (char)(*q + 32) : *q);
			luaL_pushresult(&name);              /* t ... name */
			for (v = colon + 1; v < line_end && (*v == ' ' || *v == '\t'); v++)
				;
			for (ve = line_end; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
				;
			lua_pushvalue(L, -1);
			if (lua_rawget(L, t) == LUA_TSTRING) { /* t ... name old */
				lua_pushliteral(L, ", ");
				lua_pushlstring(L, v, (size_t)(ve - v));
				lua_concat(L, 3);
			} else {
				lua_pop(L, 1);
				lua_pushlstring(L, v, (size_t)(ve - v));
			}
			lua_rawset(L, t);
		}
		p = eol ? eol + 1 : end;
	}
}

/* End the wait with msg: release the request, then raise. */
int lhttp_raise_released(lua_State *L, req_guard *g, const char *msg) /* MAY_LJMP */
{
	lua_pushstring(L, msg);
	lhttp_guard_release(g);
	return lua_error(L);
}

req_guard *lhttp_push_guard(lua_State *L, lhttp *h, const char *oom) /* MAY_LJMP */
{
	req_guard *g = lua_newuserdatauv(L, sizeof(*g), 0);
	memset(g, 0, sizeof(*g));
	luaL_setmetatable(L, GUARD_MT);
	g->h = h;
	if (!(g->easy = curl_easy_init()))
		lhttp_raise_released(L, g, oom);
	return g;
}

/* The reason a finished transfer failed, copied to the stack. */
void lhttp_push_reason(lua_State *L, req_guard *g, CURLcode rc) /* MAY_LJMP */
{
	char msg[128];
	if (g->over_limit || rc == CURLE_FILESIZE_EXCEEDED)
		lua_pushfstring(L, "the response body is larger than http_max_body (%I bytes)",
		                (LUAI_UACINT)g->max_body);
	else if (rc == CURLE_OPERATION_TIMEDOUT) {
		/* lua_pushfstring knows no precision: format here */
		snprintf(msg, sizeof(msg), "%s (after %.3g seconds)", curl_easy_strerror(rc), g->timeout);
		lua_pushstring(L, msg);
	}
	else if (g->errbuf[0] && strcmp(g->errbuf, curl_easy_strerror(rc)) != 0)
		lua_pushfstring(L, "%s (%s)", curl_easy_strerror(rc), g->errbuf);
	else
		lua_pushstring(L, curl_easy_strerror(rc));
}

/* Point the easy handle's callbacks at g (again after g moves). */
void lhttp_bind_guard(req_guard *g)
{
	curl_easy_setopt(g->easy, CURLOPT_ERRORBUFFER, g->errbuf);
	curl_easy_setopt(g->easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(g->easy, CURLOPT_WRITEDATA, g);
	curl_easy_setopt(g->easy, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(g->easy, CURLOPT_HEADERDATA, g);
}

/* Set the easy handle's options from the prepared request at index 1. */
const char *lhttp_setup(lua_State *L, req_guard *g) /* MAY_LJMP */
{
	const config *cfg = g->h->cfg;
	CURL *e = g->easy;
	const char *method, *url;
	double timeout;
	size_t blen = 0;
	const char *body = NULL;

	lua_getfield(L, 1, "url");
	url = luaL_checkstring(L, -1);
	lua_getfield(L, 1, "method");
	method = luaL_checkstring(L, -1);
	lua_getfield(L, 1, "timeout");
	timeout = luaL_checknumber(L, -1);
	g->timeout = timeout;
	lua_getfield(L, 1, "follow");
	if (lua_toboolean(L, -1)) {
		curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
		curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
	}
	lua_getfield(L, 1, "body");
	if (lua_type(L, -1) == LUA_TSTRING)
		body = lua_tolstring(L, -1, &blen);   /* copied by libcurl */
	lua_getfield(L, 1, "header_lines");
	if (lua_istable(L, -1)) {
		lua_Integer n = luaL_len(L, -1);
		for (lua_Integer i = 1; i <= n; i++) {
			struct curl_slist *l;
			lua_rawgeti(L, -1, i);
			l = curl_slist_append(g->headers, luaL_checkstring(L, -1));
			lua_pop(L, 1);
			if (!l)
				return "out of memory";
			g->headers = l;
		}
	}
	/* no "Expect: 100-continue" round trip for large bodies */
	{
		struct curl_slist *l = curl_slist_append(g->headers, "Expect:");
		if (!l)
			return "out of memory";
		g->headers = l;
	}
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, g->headers);
	lhttp_bind_guard(g);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(timeout * 1000 < 1 ? 1 : timeout * 1000));
	curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)g->max_body);
	if (cfg->http_ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, cfg->http_ca_file);
	if (body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
	}
	if (strcmp(method, "HEAD") == 0)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	else if (!(strcmp(method, "GET") == 0 && !body) && !(strcmp(method, "POST") == 0 && body))
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	return NULL;
}

/*
 * Add g's transfer to the multi handle and drive the transfers until it
 * has ended (*rc its result); sends that end meanwhile are kept for their
 * settling.  Waits in slices of SLICE seconds, asking h->wait between
 * them: the Lua hook cannot run while C waits.  NULL, or the text that
 * ended the wait (the deadline, a stop).
 */
const char *lhttp_wait_one(lhttp *h, req_guard *g, CURLcode *rc)
{
	const char *why;
	int running;

	if (curl_multi_add_handle(h->multi, g->easy) != CURLM_OK)
		return "libcurl refused the transfer";
	g->added = 1;
	for (;;) {
		CURLMsg *m;
		int queued;
		double left = -1, slice = SLICE;
		if (curl_multi_perform(h->multi, &running) != CURLM_OK)
			return "libcurl failed";
		while ((m = curl_multi_info_read(h->multi, &queued)) != NULL) {
			if (m->msg != CURLMSG_DONE)
				continue;
			if (m->easy_handle == g->easy) {
				*rc = m->data.result;
				return NULL;
			}
			lhttp_send_done(h, m->easy_handle, m->data.result);
		}
		if (h->wait && (why = h->wait(h->wait_arg, &left)) != NULL)
			return why;
		if (left >= 0 && left < slice)
			slice = left;
		curl_multi_poll(h->multi, NULL, 0, (int)(slice * 1000) + 1, NULL);
	}
}

/*
 * host.http_request(prepared): the response table, or nil and libcurl's
 * reason.  MAY_LJMP
 */
static int http_request(lua_State *L)
{
	lhttp *h = lua_touserdata(L, lua_upvalueindex(1));
	req_guard *g;
	const char *why;
	CURLcode rc = CURLE_OK;
	long status = 0;

	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	g = lhttp_push_guard(L, h, "pgq.http.request: out of memory");   /* 2 */
	g->max_body = h->cfg->http_max_body > 0 ? (size_t)h->cfg->http_max_body : (size_t)10 << 20;
	if ((why = lhttp_setup(L, g)) != NULL)
		return lhttp_raise_released(L, g, why);
	lua_settop(L, 2);
	if ((why = lhttp_wait_one(h, g, &rc)) != NULL)
		return lhttp_raise_released(L, g, why);
	if (rc != CURLE_OK) {
		lua_pushnil(L);
		lhttp_push_reason(L, g, rc);
		lhttp_guard_release(g);
		return 2;
	}
	curl_easy_getinfo(g->easy, CURLINFO_RESPONSE_CODE, &status);
	lua_createtable(L, 0, 3);                    /* 3: the response */
	lua_pushinteger(L, status);
	lua_setfield(L, 3, "status");
	lhttp_push_headers(L, &g->head);
	lua_setfield(L, 3, "headers");
	lua_pushlstring(L, g->body.p ? g->body.p : "", g->body.len);
	lua_setfield(L, 3, "body");
	lhttp_guard_release(g);
	return 1;
}

void lhttp_register(lua_State *L, lhttp *h)
{
	if (luaL_newmetatable(L, GUARD_MT)) {
		lua_pushcfunction(L, guard_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_pop(L, 1);
	lua_pushlightuserdata(L, h);
	lua_pushcclosure(L, http_context, 1);
	lua_setfield(L, -2, "http_context");
	lua_pushlightuserdata(L, h);
	lua_pushcclosure(L, http_request, 1);
	lua_setfield(L, -2, "http_request");
	lua_pushlightuserdata(L, h);
	lua_pushcclosure(L, lhttp_send_fn, 1);
	lua_setfield(L, -2, "http_send");
	lmail_register(L, h);
}

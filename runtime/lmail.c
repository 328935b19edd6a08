/*
 * lmail.c - pgq.mail.send's transport: one mail through smtp_url with
 * libcurl's SMTP, on the multi handle of pgq.http (lhttp.c), waited for
 * like pgq.http.request.  lua/pgqlua/mail.lua writes the message; this
 * file sends it.  The URL's and the config's credentials stay here: the
 * script's state sees the URL without them.
 */
#include "lhttp_int.h"

#include <curl/curl.h>
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

/* smtp_url without user, password, options, query and fragment, into out
 * (empty when it does not parse). */
static void safe_url(const char *url, char *out, size_t outlen)
{
	CURLU *u = curl_url();
	char *s = NULL;

	out[0] = '\0';
	if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK) {
		curl_url_set(u, CURLUPART_USER, NULL, 0);
		curl_url_set(u, CURLUPART_PASSWORD, NULL, 0);
		curl_url_set(u, CURLUPART_OPTIONS, NULL, 0);
		curl_url_set(u, CURLUPART_QUERY, NULL, 0);
		curl_url_set(u, CURLUPART_FRAGMENT, NULL, 0);
		if (curl_url_get(u, CURLUPART_URL, &s, 0) == CURLUE_OK)
			snprintf(out, outlen, "%s", s);
	}
	curl_free(s);
	curl_url_cleanup(u);
}

/* host.mail_context(): {url = smtp_url without its secrets (nil without
 * smtp_url), timeout = http_timeout} */
static int mail_context(lua_State *L)
{
	lhttp *h = lua_touserdata(L, lua_upvalueindex(1));
	char url[512];

	lua_createtable(L, 0, 2);
	if (h->cfg->smtp_url) {
		safe_url(h->cfg->smtp_url, url, sizeof(url));
		lua_pushstring(L, url[0] ? url : "smtp_url");
		lua_setfield(L, -2, "url");
	}
	lua_pushnumber(L, h->cfg->http_timeout > 0 ? h->cfg->http_timeout : 30);
	lua_setfield(L, -2, "timeout");
	return 1;
}

static size_t on_read(char *p, size_t size, size_t n, void *ud)
{
	req_guard *g = ud;
	size_t left = g->body.len - g->up_off, len = size * n < left ? size * n : left;
	memcpy(p, g->body.p + g->up_off, len);
	g->up_off += len;
	return len;
}

/* The server's replies go by here: keep the last refusal (4xx, 5xx), the
 * text the error shows.  What the client sends (AUTH among it) is never
 * looked at. */
static int on_debug(CURL *e, curl_infotype type, char *p, size_t n, void *ud)
{
	req_guard *g = ud;
	size_t k = 0;
	(void)e;
	if (type != CURLINFO_HEADER_IN || n < 3 || (p[0] != '4' && p[0] != '5'))
		return 0;
	for (; k < n && k + 1 < sizeof(g->reply) && p[k] != '\r' && p[k] != '\n'; k++)
		g->reply[k] = (p[k] >= ' ' && p[k] < 127) ? p[k] : '?';
	g->reply[k] = '\0';
	return 0;
}

/* Set g's easy handle for the prepared message at index 1: its envelope
 * into g->headers, its text into g->body. */
static const char *mail_setup(lua_State *L, req_guard *g) /* MAY_LJMP */
{
	const config *cfg = g->h->cfg;
	CURL *e = g->easy;
	const char *from, *data;
	size_t dlen;
	char addr[600];
	lua_Integer n;

	lua_getfield(L, 1, "from");
	from = luaL_checkstring(L, -1);
	lua_getfield(L, 1, "data");
	data = luaL_checklstring(L, -1, &dlen);
	lua_getfield(L, 1, "timeout");
	g->timeout = luaL_checknumber(L, -1);
	lua_getfield(L, 1, "rcpt");
	luaL_checktype(L, -1, LUA_TTABLE);
	n = luaL_len(L, -1);
	for (lua_Integer i = 1; i <= n; i++) {
		struct curl_slist *l;
		lua_rawgeti(L, -1, i);
		snprintf(addr, sizeof(addr), "<%s>", luaL_checkstring(L, -1));
		lua_pop(L, 1);
		if (!(l = curl_slist_append(g->headers, addr)))
			return "out of memory";
		g->headers = l;
	}
	if (lhttp_buf_add(&g->body, data, dlen) != 0)
		return "out of memory";
	snprintf(addr, sizeof(addr), "<%s>", from);
	curl_easy_setopt(e, CURLOPT_URL, cfg->smtp_url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
	if (cfg->smtp_user)
		curl_easy_setopt(e, CURLOPT_USERNAME, cfg->smtp_user);
	if (cfg->smtp_password)
		curl_easy_setopt(e, CURLOPT_PASSWORD, cfg->smtp_password);
	/* smtp:// goes over TLS (STARTTLS) when the server offers it */
	curl_easy_setopt(e, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY);
	if (cfg->http_ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, cfg->http_ca_file);
	curl_easy_setopt(e, CURLOPT_MAIL_FROM, addr);
	curl_easy_setopt(e, CURLOPT_MAIL_RCPT, g->headers);
	curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)g->body.len);
	curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
	curl_easy_setopt(e, CURLOPT_READDATA, g);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, g->errbuf);
	curl_easy_setopt(e, CURLOPT_DEBUGFUNCTION, on_debug);
	curl_easy_setopt(e, CURLOPT_DEBUGDATA, g);
	curl_easy_setopt(e, CURLOPT_VERBOSE, 1L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(g->timeout * 1000 < 1 ? 1 : g->timeout * 1000));
	return NULL;
}

/*
 * host.mail_send(prepared): true, or nil and the reason (libcurl's, and
 * the server's refusal when there was one).  MAY_LJMP
 */
static int mail_send(lua_State *L)
{
	lhttp *h = lua_touserdata(L, lua_upvalueindex(1));
	req_guard *g;
	const char *why;
	CURLcode rc = CURLE_OK;

	luaL_checktype(L, 1, LUA_TTABLE);
	lua_settop(L, 1);
	if (!h->cfg->smtp_url) {
		lua_pushnil(L);
		lua_pushliteral(L, "no smtp_url in the config");
		return 2;
	}
	g = lhttp_push_guard(L, h, "pgq.mail.send: out of memory");   /* 2 */
	if ((why = mail_setup(L, g)) != NULL)
		return lhttp_raise_released(L, g, why);
	lua_settop(L, 2);
	if ((why = lhttp_wait_one(h, g, &rc)) != NULL)
		return lhttp_raise_released(L, g, why);
	if (rc != CURLE_OK) {
		lua_pushnil(L);                          /* 3 */
		lhttp_push_reason(L, g, rc);             /* 4 */
		if (g->reply[0]) {
			lua_pushfstring(L, "; the server said: %s", g->reply);
			lua_concat(L, 2);
		}
		lhttp_guard_release(g);
		return 2;
	}
	lhttp_guard_release(g);
	lua_pushboolean(L, 1);
	return 1;
}

void lmail_register(lua_State *L, lhttp *h)
{
	lua_pushlightuserdata(L, h);
	lua_pushcclosure(L, mail_context, 1);
	lua_setfield(L, -2, "mail_context");
	lua_pushlightuserdata(L, h);
	lua_pushcclosure(L, mail_send, 1);
	lua_setfield(L, -2, "mail_send");
}

/*
 * lbcall.c - the calls into a loaded script (see lbridge.h): process_event
 * with its ev table, the max_retries rule, on_batch_start/on_batch_end.
 * Each goes through lb_docall, the one protected-call path (lbridge.c).
 */
#include "lbridge_int.h"
#include "log.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- events ---- */

typedef struct event_call {
	lb_script *s;
	const PGresult *res;
	int row;
} event_call;

/* The ev table's keys, in PGQ_EV_* column order (pgq.h). */
static const char *const ev_keys[PGQ_EV_NCOLS] = {
	"id", "time", "txid", "retry", "type", "data", "extra1", "extra2", "extra3", "extra4",
};

/* Decimal text to an integer: the columns are int8 that PostgreSQL wrote. */
static lua_Integer parse_int(const char *p)
{
	lua_Unsigned v = 0;
	int neg = *p == '-';
	for (p += neg; *p >= '0' && *p <= '9'; p++)
		v = v * 10 + (lua_Unsigned)(*p - '0');
	return neg ? (lua_Integer)(0u - v) : (lua_Integer)v;
}

/* Registry table: ev_keys as interned strings, so that building an ev
 * costs no string hashing. */
void lb_make_ev_keys(lua_State *L, lb_script *s)
{
	lua_createtable(L, PGQ_EV_NCOLS, 0);
	for (int i = 0; i < PGQ_EV_NCOLS; i++) {
		lua_pushstring(L, ev_keys[i]);
		lua_rawseti(L, -2, i + 1);
	}
	s->ref_ev_keys = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Push the ev table of a row.  Text columns become strings, the integer
 * columns integers (a NULL retry count is 0), other NULLs pgq.null. */
static void push_event(lua_State *L, const lb_script *s, const PGresult *res, int row)
{
	int keys, null, ev;
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref_ev_keys);
	keys = lua_gettop(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref_null);
	null = keys + 1;
	lua_createtable(L, 0, PGQ_EV_NCOLS);
	ev = keys + 2;
	for (int col = 0; col < PGQ_EV_NCOLS; col++) {
		lua_rawgeti(L, keys, col + 1);
		if (PQgetisnull(res, row, col)) {
			if (col == PGQ_EV_RETRY)
				lua_pushinteger(L, 0);
			else
				lua_pushvalue(L, null);
		} else if (col == PGQ_EV_ID || col == PGQ_EV_TXID || col == PGQ_EV_RETRY)
			lua_pushinteger(L, parse_int(PQgetvalue(res, row, col)));
		else
			lua_pushlstring(L, PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col));
		lua_rawset(L, ev);
	}
	lua_replace(L, keys);
	lua_pop(L, 1);
}

/* Returns outcome (integer), delay (number or nil), message (string or nil) */
static int event_tramp(lua_State *L) /* MAY_LJMP */
{
	event_call *ec = lua_touserdata(L, 1);
	lb_script *s = ec->s;
	const char *name;
	int nret;
	lb_outcome code;

	lua_settop(L, 0);
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref_process_event);
	push_event(L, s, ec->res, ec->row);
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref_db);
	lua_call(L, 2, LUA_MULTRET);
	nret = lua_gettop(L);

	/* stack: results 1..nret.  No result, nil and EVENT_OK are OK; the
	 * rest goes to pgqlua.rules.map_result(where, first, second), which
	 * returns (outcome name, delay or nil, reason or nil) or raises. */
	if (nret == 0 || lua_isnil(L, 1) || (lua_isinteger(L, 1) && lua_tointeger(L, 1) == s->code_ok)) {
		lua_settop(L, 0);
		lua_pushinteger(L, LB_OK);
		return 1;
	}
	lua_settop(L, 2);
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref_map_result);
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref_where);
	lua_pushvalue(L, 1);
	lua_pushvalue(L, 2);
	lua_call(L, 3, 3);
	/* stack: first, second, outcome, delay, reason */
	name = lua_tostring(L, 3);
	if (!name)
		return luaL_error(L, "pgqlua.rules.map_result returned no outcome");
	if (strcmp(name, "OK") == 0)
		code = LB_OK;
	else if (strcmp(name, "RETRY") == 0)
		code = LB_RETRY;
	else if (strcmp(name, "FAILED") == 0)
		code = LB_FAILED;
	else if (strcmp(name, "ABORT_BATCH") == 0)
		code = LB_ABORT;
	else
		return luaL_error(L, "pgqlua.rules.map_result returned %s", name);
	lua_pushinteger(L, code);
	lua_replace(L, 3);
	return 3;
}

void lb_call_event(lb_script *s, const PGresult *res, int row, lb_result *out)
{
	lua_State *L = s->L;
	event_call ec = {s, res, row};
	int base, status;

	out->delay = -1;
	out->msg[0] = '\0';
	lhttp_set_event(s->http, 1, parse_int(PQgetvalue(res, row, PGQ_EV_ID)), row);
	status = lb_docall(s, event_tramp, &ec, 3, s->cfg->event_timeout, &base, out->msg, sizeof(out->msg));
	lhttp_set_event(s->http, 0, 0, -1);
	if (status != LUA_OK) {
		out->outcome = LB_ERROR;
		return;
	}
	out->outcome = (lb_outcome)lua_tointeger(L, base + 1);
	if (lua_type(L, base + 2) == LUA_TNUMBER)
		out->delay = lua_tonumber(L, base + 2);
	if (lua_type(L, base + 3) == LUA_TSTRING)
		snprintf(out->msg, sizeof(out->msg), "%s", lua_tostring(L, base + 3));
	lua_settop(L, 0);
}

/* ---- pgq.http.send ---- */

int lb_sends_pending(lb_script *s, int row)
{
	return lhttp_pending(s->http, row);
}

int lb_sends_next_row(lb_script *s)
{
	return lhttp_first_row(s->http);
}

typedef struct settle_call {
	lb_script *s;
	int row;
	lb_result *r;
} settle_call;

static const char *const outcome_names[] = {"OK", "RETRY", "FAILED", "ABORT_BATCH", "ERROR"};

/* Returns outcome (integer), delay (number or nil), message (string or nil) */
static int settle_tramp(lua_State *L) /* MAY_LJMP */
{
	settle_call *sc = lua_touserdata(L, 1);
	const char *why = lhttp_wait_sends(sc->s->http, sc->row), *name;
	int code;
	if (why)
		return luaL_error(L, "%s", why);
	lua_settop(L, 0);
	lua_rawgeti(L, LUA_REGISTRYINDEX, sc->s->ref_settle);
	lua_pushstring(L, outcome_names[sc->r->outcome]);
	if (sc->r->delay >= 0)
		lua_pushnumber(L, sc->r->delay);
	else
		lua_pushnil(L);
	lua_pushstring(L, sc->r->msg);
	lhttp_push_settled(L, sc->s->http, sc->row);
	lua_call(L, 4, 3);
	name = luaL_checkstring(L, 1);
	for (code = 0; code < 5 && strcmp(name, outcome_names[code]) != 0; code++)
		;
	if (code == 5)
		return luaL_error(L, "pgqlua.http.settle returned %s", name);
	lua_pushinteger(L, code);
	lua_replace(L, 1);
	return 3;
}

void lb_settle_sends(lb_script *s, int row, lb_result *r)
{
	settle_call sc = {s, row, r};
	char msg[LB_MSG_LEN];
	int base;

	if (lb_docall(s, settle_tramp, &sc, 3, s->cfg->event_timeout, &base, msg, sizeof(msg)) != LUA_OK) {
		r->outcome = LB_ERROR;
		r->delay = -1;
		snprintf(r->msg, sizeof(r->msg), "%s", msg);
	} else {
		r->outcome = (lb_outcome)lua_tointeger(s->L, base + 1);
		r->delay = lua_type(s->L, base + 2) == LUA_TNUMBER ? lua_tonumber(s->L, base + 2) : -1;
		snprintf(r->msg, sizeof(r->msg), "%s", lua_type(s->L, base + 3) == LUA_TSTRING ? lua_tostring(s->L, base + 3) : "");
	}
	lua_settop(s->L, 0);
	lhttp_forget(s->L, s->http, row);
}

void lb_sends_drop(lb_script *s)
{
	if (s)
		lhttp_forget(s->L, s->http, -1);
}

/* ---- the max_retries rule ---- */

typedef struct retry_call {
	lb_script *s;
	long long retry;
	int max_retries;
	const char *msg;
} retry_call;

/* Returns nil or the reason (pgqlua.rules.retries_used_up). */
static int retry_tramp(lua_State *L) /* MAY_LJMP */
{
	retry_call *rc = lua_touserdata(L, 1);
	lua_rawgeti(L, LUA_REGISTRYINDEX, rc->s->ref_retries_used_up);
	lua_pushinteger(L, (lua_Integer)rc->retry);
	lua_pushinteger(L, rc->max_retries);
	lua_pushstring(L, rc->msg);
	lua_call(L, 3, 1);
	return 1;
}

int lb_retries_used_up(lb_script *s, long long retry, int max_retries, const char *msg, char *reason,
                       size_t len)
{
	retry_call rc = {s, retry, max_retries, msg};
	size_t limit = s->mem_limit;
	int base, used_up = 0;

	/* a few bytes beyond the script's limit: the rule must not fail
	 * because the script used up its memory */
	s->mem_limit = 0;
	if (lb_docall(s, retry_tramp, &rc, 1, 0, &base, reason, len) != LUA_OK) {
		/* only a failed malloc gets here: the event comes back */
		log_error("the max_retries rule failed: %s", reason);
	} else if (lua_type(s->L, base + 1) == LUA_TSTRING) {
		used_up = 1;
		snprintf(reason, len, "%s", lua_tostring(s->L, base + 1));
	}
	lua_settop(s->L, 0);
	s->mem_limit = limit;
	return used_up;
}

/* ---- batch hooks ---- */

typedef struct hook_call {
	lb_script *s;
	int ref;
	const pgq_batch *b;
} hook_call;

static int hook_tramp(lua_State *L) /* MAY_LJMP */
{
	hook_call *hc = lua_touserdata(L, 1);
	lua_rawgeti(L, LUA_REGISTRYINDEX, hc->ref);
	lua_createtable(L, 0, 5);
	lua_pushinteger(L, hc->b->batch_id);
	lua_setfield(L, -2, "id");
	lua_pushinteger(L, hc->b->cur_tick_id);
	lua_setfield(L, -2, "tick_id");
	lua_pushinteger(L, hc->b->prev_tick_id);
	lua_setfield(L, -2, "prev_tick_id");
	lua_pushstring(L, hc->b->cur_tick_time);
	lua_setfield(L, -2, "tick_time");
	lua_pushstring(L, hc->b->prev_tick_time);
	lua_setfield(L, -2, "prev_tick_time");
	lua_rawgeti(L, LUA_REGISTRYINDEX, hc->s->ref_db);
	lua_call(L, 2, 0);
	return 0;
}

static int call_hook(lb_script *s, int ref, const pgq_batch *b, char *err, size_t errlen)
{
	hook_call hc = {s, ref, b};
	int base;
	if (ref == LUA_NOREF)
		return 0;
	if (lb_docall(s, hook_tramp, &hc, 0, s->cfg->event_timeout, &base, err, errlen) != LUA_OK)
		return -1;
	lua_settop(s->L, 0);
	return 0;
}

int lb_call_batch_start(lb_script *s, const pgq_batch *b, char *err, size_t errlen)
{
	return call_hook(s, s->ref_batch_start, b, err, errlen);
}

int lb_call_batch_end(lb_script *s, const pgq_batch *b, char *err, size_t errlen)
{
	return call_hook(s, s->ref_batch_end, b, err, errlen);
}

/*
 * ldb.c - the script's `db` handle (see ldb.h).  Errors are raised only
 * after every PGresult is freed: the message is copied to the stack first.
 */
#include "ldb.h"
#include "log.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LDB_MT "pgqlua.db"
#define SAVEPOINT "pgqlua_event"

/* OIDs of the types converted to Lua numbers and booleans */
#define OID_BOOL 16
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_OID 26
#define OID_FLOAT4 700
#define OID_FLOAT8 701

#define RESULT_MT "pgqlua.result"

/* Holds a PGresult while Lua builds rows from it: a memory error there
 * unwinds past ldb_exec, and __gc frees the result. */
typedef struct result_guard {
	PGresult *res;
} result_guard;

static int result_gc(lua_State *L)
{
	result_guard *g = luaL_checkudata(L, 1, RESULT_MT);
	PQclear(g->res);
	g->res = NULL;
	return 0;
}

typedef struct ldb_ud {
	ldb_state *st;
	int null_ref;
} ldb_ud;

void ldb_event_begin(ldb_state *st)
{
	st->savepoint_open = 0;
	st->sql_failed = 0;
	st->sql_error[0] = '\0';
}

int ldb_event_end(ldb_state *st, int keep, char *err, size_t errlen)
{
	int rc;
	if (!st->savepoint_open)
		return 0;
	st->savepoint_open = 0;
	if (keep && !st->sql_failed) {
		/* RELEASE rides along with the next SAVEPOINT or the COMMIT */
		st->release_pending = 1;
		return 0;
	}
	st->release_pending = 0;
	rc = pgconn_cmd(st->conn, "rollback to savepoint " SAVEPOINT "; release savepoint " SAVEPOINT,
	                err, errlen);
	return rc;
}

void ldb_after_commit(ldb_state *st)
{
	st->savepoint_open = 0;
	st->release_pending = 0;
}

void ldb_batch_begin(ldb_state *st, pgconn *conn)
{
	st->conn = conn;
	st->active = 1;
	st->savepoint_open = 0;
	st->release_pending = 0;
	st->statements = 0;
	ldb_event_begin(st);
}

void ldb_batch_end(ldb_state *st)
{
	st->active = 0;
	st->savepoint_open = 0;
	st->release_pending = 0;
}

static ldb_ud *check_handle(lua_State *L) /* MAY_LJMP */
{
	ldb_ud *ud = luaL_checkudata(L, 1, LDB_MT);
	if (!ud->st || !ud->st->active || !ud->st->conn)
		luaL_error(L, "db handle used outside its batch (it is valid only inside process_event and the batch hooks)");
	return ud;
}

/* Replace stack slot idx with the text form of a parameter; NULL for SQL NULL. */
static const char *param_text(lua_State *L, int null_ref, int idx, int n) /* MAY_LJMP */
{
	switch (lua_type(L, idx)) {
	case LUA_TNIL:
		return NULL;
	case LUA_TSTRING: {
		size_t len;
		const char *s = lua_tolstring(L, idx, &len);
		if (strlen(s) != len)
			luaL_error(L, "db:exec: parameter %d contains a NUL byte", n);
		return s;
	}
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx))
			lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, idx));
		else {
			lua_Number x = lua_tonumber(L, idx);
			char buf[64];
			if (x == floor(x) && fabs(x) < 9.0e15)
				snprintf(buf, sizeof(buf), "%.0f", x);
			else
				snprintf(buf, sizeof(buf), "%.17g", x);
			lua_pushstring(L, buf);
		}
		lua_replace(L, idx);
		return lua_tostring(L, idx);
	case LUA_TBOOLEAN:
		return lua_toboolean(L, idx) ? "true" : "false";
	default:
		lua_rawgeti(L, LUA_REGISTRYINDEX, null_ref);
		if (lua_rawequal(L, -1, idx)) {
			lua_pop(L, 1);
			return NULL;
		}
		lua_pop(L, 1);
		luaL_error(L, "db:exec: parameter %d is a %s (expected a string, number, boolean, nil or pgq.null)",
		           n, luaL_typename(L, idx));
	}
	return NULL;
}

static void push_value(lua_State *L, int null_ref, const PGresult *res, int r, int col)
{
	const char *v;
	if (PQgetisnull(res, r, col)) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, null_ref);
		return;
	}
	v = PQgetvalue(res, r, col);
	switch (PQftype(res, col)) {
	case OID_BOOL:
		lua_pushboolean(L, v[0] == 't');
		return;
	case OID_INT2:
	case OID_INT4:
	case OID_INT8:
	case OID_OID:
	case OID_FLOAT4:
	case OID_FLOAT8:
		if (lua_stringtonumber(L, v) != 0)
			return;
		break;
	default:
		break;
	}
	lua_pushlstring(L, v, (size_t)PQgetlength(res, r, col));
}

/* Trace: the statement and its parameters as one line,
 * `db:exec <sql> [p1, p2, NULL]`, parameters in Lua %q form. */
static void log_sql(lua_State *L, const char *sql, int nparams, const char *const *params)
{
	luaL_Buffer b;
	luaL_buffinit(L, &b);
	for (int i = 0; i < nparams; i++) {
		if (i)
			luaL_addstring(&b, ", ");
		if (!params[i]) {
			luaL_addstring(&b, "NULL");
			continue;
		}
		lua_getglobal(L, "string");
		lua_getfield(L, -1, "format");
		lua_remove(L, -2);
		lua_pushliteral(L, "%q");
		lua_pushstring(L, params[i]);
		lua_call(L, 2, 1);
		luaL_addvalue(&b);
	}
	luaL_pushresult(&b);
	log_trace("db:exec %s [%s]", sql, lua_tostring(L, -1));
	lua_pop(L, 1);
}

/* rows, count = db:exec(sql, ...) */
static int ldb_exec(lua_State *L) /* MAY_LJMP */
{
	ldb_ud *ud = check_handle(L);
	ldb_state *st = ud->st;
	const char *sql = luaL_checkstring(L, 2);
	int nparams = lua_gettop(L) - 2;
	const char **params;
	char err[1024];
	const char *pre[2];
	result_guard *guard;
	PGresult *res;
	int nrows, ncols, npre, failed_pre;

	/* stack: 1 handle, 2 sql, 3.. params, then the params array, the guard */
	params = lua_newuserdatauv(L, sizeof(char *) * (size_t)(nparams > 0 ? nparams : 1), 0);
	for (int i = 0; i < nparams; i++)
		params[i] = param_text(L, ud->null_ref, 3 + i, i + 1);

	if (st->sql_failed)
		return luaL_error(L, "db:exec: an earlier statement of this event failed (%s); the event's writes will be rolled back",
		                  st->sql_error);
	guard = lua_newuserdatauv(L, sizeof(*guard), 0);
	guard->res = NULL;
	luaL_setmetatable(L, RESULT_MT);

	/* the event's savepoint (and the RELEASE of the previous one) ride in
	 * the same round trip as the statement */
	npre = 0;
	if (!st->savepoint_open) {
		if (st->release_pending)
			pre[npre++] = "release savepoint " SAVEPOINT;
		pre[npre++] = "savepoint " SAVEPOINT;
	}
	st->statements++;
	if (log_current_level >= LOG_LVL_TRACE)
		log_sql(L, sql, nparams, params);
	res = pgconn_exec_after(st->conn, pre, npre, sql, nparams, params, &failed_pre, err, sizeof(err));
	if (npre > 0 && !failed_pre) {
		st->release_pending = 0;
		st->savepoint_open = 1;
	}
	if (pgconn_is_ok(st->conn) && PQtransactionStatus(pgconn_pg(st->conn)) == PQTRANS_IDLE) {
		/* the script ended the batch's transaction: nothing after this
		 * may autocommit, so drop the connection; the batch comes again */
		PQclear(res);
		pgconn_close(st->conn);
		st->sql_failed = 1;
		snprintf(st->sql_error, sizeof(st->sql_error), "the script ended the batch's transaction");
		return luaL_error(L, "db:exec: transaction control (COMMIT, ROLLBACK, ...) is not allowed: the runtime owns the batch's transaction");
	}
	if (!res) {
		st->sql_failed = 1;
		snprintf(st->sql_error, sizeof(st->sql_error), "%s", err);
		if (failed_pre)
			return luaL_error(L, "db:exec: cannot take a savepoint: %s", err);
		return luaL_error(L, "db:exec: %s", err);
	}
	guard->res = res;
	nrows = PQntuples(res);
	ncols = PQnfields(res);
	lua_createtable(L, nrows, 0);
	for (int r = 0; r < nrows; r++) {
		lua_createtable(L, 0, ncols);
		for (int col = 0; col < ncols; col++) {
			push_value(L, ud->null_ref, res, r, col);
			lua_setfield(L, -2, PQfname(res, col));
		}
		lua_rawseti(L, -2, r + 1);
	}
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		lua_pushinteger(L, nrows);
	else {
		const char *t = PQcmdTuples(res);
		lua_pushinteger(L, t[0] ? atoll(t) : 0);
	}
	PQclear(res);
	guard->res = NULL;
	return 2;
}

static int ldb_tostring(lua_State *L)
{
	ldb_ud *ud = luaL_checkudata(L, 1, LDB_MT);
	lua_pushstring(L, ud->st && ud->st->active ? "pgqlua.db (open)" : "pgqlua.db (outside a batch)");
	return 1;
}

void ldb_open_lib(lua_State *L)
{
	luaL_newmetatable(L, RESULT_MT);
	lua_pushcfunction(L, result_gc);
	lua_setfield(L, -2, "__gc");
	lua_pop(L, 1);

	static const luaL_Reg methods[] = {{"exec", ldb_exec}, {NULL, NULL}};
	luaL_newmetatable(L, LDB_MT);
	luaL_newlib(L, methods);
	lua_setfield(L, -2, "__index");
	lua_pushcfunction(L, ldb_tostring);
	lua_setfield(L, -2, "__tostring");
	lua_pushliteral(L, "db");
	lua_setfield(L, -2, "__metatable");
	lua_pop(L, 1);
}

void ldb_push(lua_State *L, ldb_state *st, int null_ref)
{
	ldb_ud *ud = lua_newuserdatauv(L, sizeof(*ud), 0);
	ud->st = st;
	ud->null_ref = null_ref;
	luaL_setmetatable(L, LDB_MT);
}

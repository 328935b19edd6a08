/*
 * ldb.c - the script's `db` handle (see ldb.h): its Lua methods, parameter
 * conversion, result rows and the transaction-control check; the savepoint
 * window behind it is ldbwin.c.  Errors are raised only after every
 * PGresult is freed: the message is copied to the stack first.
 */
#include "ldb.h"
#include "sqlcheck.h"
#include "log.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LDB_MT "pgqlua.db"

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

#define CURSOR_REFUSED "the cursor pgqlua_batch is the runtime's (it reads the batch with it): CLOSE, MOVE and FETCH on it are not allowed"

static ldb_ud *check_handle(lua_State *L) /* MAY_LJMP */
{
	ldb_ud *ud = luaL_checkudata(L, 1, LDB_MT);
	if (!ud->st || !ldbwin_in_batch(ud->st) || !ldbwin_conn(ud->st))
		luaL_error(L, "db handle used outside its batch (it is valid only inside process_event and the batch hooks)");
	return ud;
}

/* Replace stack slot idx with the text form of a parameter; NULL for SQL
 * NULL.  A string without NUL, an integer, nil and pgq.null need no rule;
 * anything else goes to pgqlua.rules.param_text (upvalue 1 of db:exec and
 * db:send), which gives its text or the error to raise. */
static const char *param_text(lua_State *L, int null_ref, int idx, int n, const char *verb) /* MAY_LJMP */
{
	switch (lua_type(L, idx)) {
	case LUA_TNIL:
		return NULL;
	case LUA_TSTRING: {
		size_t len;
		const char *s = lua_tolstring(L, idx, &len);
		if (strlen(s) == len)
			return s;
		break;
	}
	case LUA_TNUMBER:
		if (!lua_isinteger(L, idx))
			break;
		lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, idx));
		lua_replace(L, idx);
		return lua_tostring(L, idx);
	case LUA_TTABLE:
		lua_rawgeti(L, LUA_REGISTRYINDEX, null_ref);
		if (lua_rawequal(L, -1, idx)) {
			lua_pop(L, 1);
			return NULL;
		}
		lua_pop(L, 1);
		break;
	default:
		break;
	}
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_pushvalue(L, idx);
	lua_pushinteger(L, n);
	lua_pushstring(L, verb);
	lua_rawgeti(L, LUA_REGISTRYINDEX, null_ref);
	lua_call(L, 4, 2);
	/* stack: text (string, nil) or false and the error */
	if (lua_isboolean(L, -2))
		luaL_error(L, "%s", lua_tostring(L, -1));
	lua_pop(L, 1);
	lua_replace(L, idx);
	return lua_tostring(L, idx);
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
 * `db:exec <sql> [p1, p2, NULL]` (or db:send), parameters in Lua %q form. */
static void log_sql(lua_State *L, const char *verb, const char *sql, int nparams,
                    const char *const *params)
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
	log_trace("%s %s [%s]", verb, sql, lua_tostring(L, -1));
	lua_pop(L, 1);
}

/* What db:exec and db:send share: the handle, the SQL and its parameters
 * as text (kept on the stack), refused if the event already failed or the
 * statement is transaction control.  verb is "exec" or "send". */
static ldb_ud *take_statement(lua_State *L, const char *verb, const char **sql, int *nparams,
                              const char ***paramsp) /* MAY_LJMP */
{
	ldb_ud *ud = check_handle(L);
	ldb_state *st = ud->st;
	const char **params, *failed;
	sql_refusal refusal;

	*sql = luaL_checkstring(L, 2);
	*nparams = lua_gettop(L) - 2;
	params = lua_newuserdatauv(L, sizeof(char *) * (size_t)(*nparams > 0 ? *nparams : 1), 0);
	for (int i = 0; i < *nparams; i++)
		params[i] = param_text(L, ud->null_ref, 3 + i, i + 1, verb);
	if (ldb_event_error(st, &failed))
		luaL_error(L, "db:%s: an earlier statement of this event failed (%s); the event's writes will be rolled back",
		           verb, failed);
	refusal = sqlcheck_refusal(*sql);
	if (refusal != SQL_ALLOWED) {
		char msg[300];
		snprintf(msg, sizeof(msg), "db:%s: %s", verb, refusal == SQL_TXN_CONTROL ? ldbwin_refusal() : CURSOR_REFUSED);
		ldbwin_fail_event(st, *verb == 'e' ? LDB_ERR_EXEC : LDB_ERR_SEND, msg);
		luaL_error(L, "%s", msg);
	}
	*paramsp = params;
	return ud;
}

/* Raise for what a db:send step came to, unless it is LDBWIN_OK. */
static void send_check(lua_State *L, ldb_state *st, ldbwin_status s, const char *err) /* MAY_LJMP */
{
	const char *msg;
	switch (s) {
	case LDBWIN_OK:
		return;
	case LDBWIN_EVENT_FAILED:
		ldb_event_error(st, &msg);
		luaL_error(L, "%s", msg);
		break;
	case LDBWIN_NO_MEMORY:
		luaL_error(L, "db:send: not enough memory");
		break;
	case LDBWIN_UNUSABLE:
		luaL_error(L, "db:send: %s", err);
		break;
	}
}

/* Push the rows of res (a table of tables keyed by column name) and its
 * count: rows for a query, the rows affected for a command. */
static void push_rows(lua_State *L, int null_ref, PGresult *res)
{
	int nrows = PQntuples(res), ncols = PQnfields(res);
	lua_createtable(L, nrows, 0);
	for (int r = 0; r < nrows; r++) {
		lua_createtable(L, 0, ncols);
		for (int col = 0; col < ncols; col++) {
			push_value(L, null_ref, res, r, col);
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
}

/* rows, count = db:exec(sql, ...) */
static int ldb_exec(lua_State *L) /* MAY_LJMP */
{
	ldb_ud *ud;
	ldb_state *st;
	pgconn *conn;
	const char *sql, *failed;
	int nparams;
	const char **params;
	char err[1024];
	const char *pre[2];
	result_guard *guard;
	PGresult *res;
	int npre, failed_at;
	ldbwin_status s;

	/* stack: 1 handle, 2 sql, 3.. params, then the params array, the guard */
	ud = take_statement(L, "exec", &sql, &nparams, &params);
	st = ud->st;
	conn = ldbwin_conn(st);
	/* the sends before it first: their errors come before this statement */
	if ((s = ldbwin_wait_sends(st, err, sizeof(err))) == LDBWIN_UNUSABLE)
		return luaL_error(L, "db:exec: %s", err);
	if (s == LDBWIN_EVENT_FAILED) {
		ldb_event_error(st, &failed);
		return luaL_error(L, "db:exec: an earlier statement of this event failed (%s); the event's writes will be rolled back",
		                  failed);
	}
	guard = lua_newuserdatauv(L, sizeof(*guard), 0);
	guard->res = NULL;
	luaL_setmetatable(L, RESULT_MT);

	/* the event's savepoint (and the RELEASE of the previous one) ride in
	 * the same round trip as the statement */
	npre = ldbwin_exec_begin(st, pre);
	if (log_current_level >= LOG_LVL_TRACE)
		log_sql(L, "db:exec", sql, nparams, params);
	res = pgconn_exec_after(conn, pre, npre, sql, nparams, params, &failed_at, err, sizeof(err));
	ldbwin_exec_end(st, npre, failed_at);
	if (pgconn_is_ok(conn) && PQtransactionStatus(pgconn_pg(conn)) == PQTRANS_IDLE) {
		/* the script ended the batch's transaction: nothing after this
		 * may autocommit, so drop the connection; the batch comes again */
		PQclear(res);
		pgconn_close(conn, "the script ended the batch's transaction");
		ldbwin_fail_event(st, LDB_ERR_EXEC, "the script ended the batch's transaction");
		return luaL_error(L, "db:exec: %s", ldbwin_refusal());
	}
	if (!res) {
		ldbwin_fail_event(st, LDB_ERR_EXEC, err);
		if (failed_at >= 0 && failed_at < npre) {
			/* where the window stands is unknown: the batch must go */
			ldbwin_break(st);
			return luaL_error(L, "db:exec: cannot take a savepoint: %s", err);
		}
		return luaL_error(L, "db:exec: %s", err);
	}
	guard->res = res;
	push_rows(L, ud->null_ref, res);
	PQclear(res);
	guard->res = NULL;
	return 2;
}

/* db:send(sql, ...): queue a write; nothing is returned */
static int ldb_send(lua_State *L) /* MAY_LJMP */
{
	const char *sql;
	int nparams;
	const char **params;
	ldb_state *st = take_statement(L, "send", &sql, &nparams, &params)->st;
	char err[1024];

	send_check(L, st, ldbwin_send_record(st, sql, nparams, params, err, sizeof(err)), err);
	if (log_current_level >= LOG_LVL_TRACE)
		log_sql(L, "db:send", sql, nparams, params);
	send_check(L, st, ldbwin_send_queue(st, sql, nparams, params, err, sizeof(err)), err);
	return 0;
}

static int ldb_tostring(lua_State *L)
{
	ldb_ud *ud = luaL_checkudata(L, 1, LDB_MT);
	lua_pushstring(L, ud->st && ldbwin_in_batch(ud->st) ? "pgqlua.db (open)"
	                                                    : "pgqlua.db (outside a batch)");
	return 1;
}

void ldb_open_lib(lua_State *L, int rules)
{
	lua_getfield(L, rules, "TXN_REFUSED");
	ldbwin_set_refusal(luaL_checkstring(L, -1));
	lua_pop(L, 1);

	luaL_newmetatable(L, RESULT_MT);
	lua_pushcfunction(L, result_gc);
	lua_setfield(L, -2, "__gc");
	lua_pop(L, 1);

	static const luaL_Reg methods[] = {{"exec", ldb_exec}, {"send", ldb_send}, {NULL, NULL}};
	luaL_newmetatable(L, LDB_MT);
	luaL_newlibtable(L, methods);
	lua_getfield(L, rules, "param_text");
	luaL_setfuncs(L, methods, 1);
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

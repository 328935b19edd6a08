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

#define WINDOW "pgqlua_window"
#define WINDOW_MAX 1000            /* sends in a window: closed at the next event end */
#define LOG_MAX 10000              /* sends kept for a replay (one event may go past) */
#define ARENA_MAX (16u << 20)      /* and the bytes they may take */
#define PIPE_MAX 1000              /* statements in flight before a sync */
#define EV_CONTROL (-2)            /* pend: our RELEASE and SAVEPOINT */
#define EV_NONE (-3)               /* between events: failures found are queued */

struct ldb_sent {
	int event;
	size_t off;                    /* in the arena: see log_add */
};

struct ldb_failure {
	int event;
	char msg[512];
};

static int grow(void **p, int *cap, int need, size_t size)
{
	int n = *cap ? *cap : 64;
	void *np;
	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	np = realloc(*p, (size_t)n * size);
	if (!np)
		return -1;
	*p = np;
	*cap = n;
	return 0;
}

/* Keep a send for a replay: in the arena, the parameter count, the SQL,
 * then per parameter a byte (1: NULL) and its text.  0 or -1 (no memory). */
static int log_add(ldb_state *st, const char *sql, int nparams, const char *const *params)
{
	size_t need = sizeof(int) + strlen(sql) + 1;
	char *p;
	for (int i = 0; i < nparams; i++)
		need += 2 + (params[i] ? strlen(params[i]) : 0);
	if (grow((void **)&st->log, &st->caplog, st->nlog + 1, sizeof(*st->log)) != 0)
		return -1;
	if (st->used + need > st->cap) {
		size_t n = st->cap ? st->cap : 65536;
		char *na;
		while (n < st->used + need)
			n *= 2;
		if (!(na = realloc(st->arena, n)))
			return -1;
		st->arena = na;
		st->cap = n;
	}
	p = st->arena + st->used;
	st->log[st->nlog].event = st->event;
	st->log[st->nlog].off = st->used;
	memcpy(p, &nparams, sizeof(int));
	p += sizeof(int);
	p = stpcpy(p, sql) + 1;
	for (int i = 0; i < nparams; i++) {
		*p++ = params[i] == NULL;
		p = stpcpy(p, params[i] ? params[i] : "") + 1;
	}
	st->used += need;
	st->nlog++;
	return 0;
}

/* Queue a statement in the pipeline for `event`: 0, or -1 when the
 * connection or memory failed. */
static int pipe_send(ldb_state *st, int event, const char *sql, int nparams, const char *const *params)
{
	/* our own savepoint commands are never prepared: a script may
	 * DEALLOCATE them, and their failure must not be an event's */
	int n = pgconn_pipe_send(st->conn, sql, nparams, params, event != EV_CONTROL);
	if (n < 0 || grow((void **)&st->pend, &st->cappend, st->npend + n, sizeof(int)) != 0)
		return -1;
	while (n-- > 0)
		st->pend[st->npend++] = event;   /* a Parse, then the statement */
	return 0;
}

/* Send log entry i again. */
static int log_send(ldb_state *st, int i)
{
	const char *p = st->arena + st->log[i].off, *sql;
	const char *params[64], **pp = params;
	int nparams, rc;
	memcpy(&nparams, p, sizeof(int));
	p += sizeof(int);
	sql = p;
	p += strlen(p) + 1;
	if (nparams > 64 && !(pp = malloc(sizeof(char *) * (size_t)nparams)))
		return -1;
	for (int k = 0; k < nparams; k++) {
		int null = *p++;
		pp[k] = null ? NULL : p;
		p += strlen(p) + 1;
	}
	rc = pipe_send(st, st->log[i].event, sql, nparams, nparams > 0 ? pp : NULL);
	if (pp != params)
		free(pp);
	return rc;
}

static void log_clear(ldb_state *st)
{
	st->nlog = 0;
	st->used = 0;
}

static void set_failed(ldb_state *st, const char *msg)
{
	st->sql_failed = 1;
	snprintf(st->sql_error, sizeof(st->sql_error), "%s", msg);
}

/* Queue a failure of an event that has ended. */
static int add_failure(ldb_state *st, int event, const char *msg)
{
	if (grow((void **)&st->fail, &st->capfail, st->nfail + 1, sizeof(*st->fail)) != 0)
		return -1;
	st->fail[st->nfail].event = event;
	snprintf(st->fail[st->nfail].msg, sizeof(st->fail[st->nfail].msg), "db:send: %s", msg);
	st->nfail++;
	return 0;
}

/* Open the window if it is not: its savepoint goes out in the pipeline,
 * with the RELEASE of the last one. */
static int window_open(ldb_state *st)
{
	if (st->window_open)
		return 0;
	if (st->release_pending) {
		if (pipe_send(st, EV_CONTROL, "release savepoint " WINDOW, 0, NULL) != 0)
			return -1;
		st->release_pending = 0;
	}
	if (pipe_send(st, EV_CONTROL, "savepoint " WINDOW, 0, NULL) != 0)
		return -1;
	st->window_open = 1;
	return 0;
}

/* Roll the window back and send its log again without event `drop`. */
static int replay_without(ldb_state *st, int drop, char *err, size_t errlen)
{
	int n = 0;
	if (drop == st->event)
		st->event_undone = 1;
	for (int i = 0; i < st->nlog; i++)
		if (st->log[i].event != drop)
			st->log[n++] = st->log[i];
	st->nlog = n;
	if (pgconn_cmd(st->conn, "rollback to savepoint " WINDOW, err, errlen) != 0)
		return -1;
	for (int i = 0; i < st->nlog; i++)
		if (log_send(st, i) != 0) {
			pgconn_result_error(st->conn, NULL, err, errlen);
			return -1;
		}
	return 0;
}

/* Wait for everything in the pipeline.  A failed statement's event is
 * undone (replay_without); the event being run is marked failed, an
 * ended one queued.  0, or -1 with err: the transaction is unusable. */
static int drain(ldb_state *st, char *err, size_t errlen)
{
	char msg[512];
	while (st->npend > 0) {
		int at, event;
		st->npend = 0;
		if (pgconn_pipe_drain(st->conn, &at, msg, sizeof(msg)) != 0) {
			snprintf(err, errlen, "%s", msg);
			return -1;
		}
		if (PQtransactionStatus(pgconn_pg(st->conn)) == PQTRANS_IDLE) {
			pgconn_close(st->conn);
			snprintf(err, errlen, "db:send: transaction control (COMMIT, ROLLBACK, ...) is not allowed: the runtime owns the batch's transaction");
			return -1;
		}
		if (at < 0)
			return 0;
		event = st->pend[at];
		if (event == EV_CONTROL) {
			snprintf(err, errlen, "cannot take a savepoint: %s", msg);
			return -1;
		}
		if (event == st->event) {
			char m[560];
			snprintf(m, sizeof(m), "db:send: %s", msg);
			set_failed(st, m);
		} else if (add_failure(st, event, msg) != 0) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		if (replay_without(st, event, err, errlen) != 0)
			return -1;
	}
	return 0;
}

static void window_close(ldb_state *st)
{
	if (st->window_open)
		st->release_pending = 1;
	st->window_open = 0;
	log_clear(st);
}

int ldb_close(ldb_state *st, char *err, size_t errlen)
{
	if (st->broken) {
		snprintf(err, errlen, "%s", st->sql_error);
		return -1;
	}
	if (st->npend > 0 && drain(st, err, errlen) != 0)
		return -1;
	window_close(st);
	return 0;
}

int ldb_take_failure(ldb_state *st, int *event, char *msg, size_t msglen)
{
	if (st->nfail == 0)
		return 0;
	*event = st->fail[0].event;
	snprintf(msg, msglen, "%s", st->fail[0].msg);
	memmove(st->fail, st->fail + 1, sizeof(*st->fail) * (size_t)(st->nfail - 1));
	st->nfail--;
	return 1;
}

int ldb_failures_pending(const ldb_state *st)
{
	return st->nfail > 0;
}

void ldb_event_begin(ldb_state *st, int event)
{
	st->event = event;
	st->event_stmts = 0;
	st->event_exec = 0;
	st->event_unlogged = 0;
	st->event_undone = 0;
	st->sql_failed = 0;
	st->sql_error[0] = '\0';
}

int ldb_event_end(ldb_state *st, int keep, int close, char *err, size_t errlen)
{
	int rc = 0;
	if (st->broken) {
		snprintf(err, errlen, "%s", st->sql_error);
		return -1;
	}
	if (close || st->event_exec || st->event_unlogged || st->nlog >= WINDOW_MAX)
		close = 1;
	else if (st->event_stmts == 0 || (keep && !st->sql_failed))
		goto out;   /* its sends stay in flight, in the window */
	if (drain(st, err, errlen) != 0)
		return -1;
	if (st->sql_failed && st->event_stmts > 0) {
		/* drain undid it already unless the failure was a db:exec's */
		if (keep) {
			snprintf(err, errlen, "%s", st->sql_error);
			rc = 1;
		}
		keep = 0;
	}
	if (!keep && st->event_stmts > 0) {
		if (!st->event_undone &&
		    (replay_without(st, st->event, err, errlen) != 0 || drain(st, err, errlen) != 0))
			return -1;
		close = 1;
	}
	if (close)
		window_close(st);
out:
	st->event = EV_NONE;
	return rc;
}

void ldb_after_commit(ldb_state *st)
{
	st->window_open = 0;
	st->release_pending = 0;
	log_clear(st);
}

void ldb_batch_begin(ldb_state *st, pgconn *conn)
{
	st->conn = conn;
	st->active = 1;
	st->window_open = 0;
	st->release_pending = 0;
	st->statements = 0;
	st->broken = 0;
	st->npend = 0;
	st->nfail = 0;
	log_clear(st);
	ldb_event_begin(st, LDB_HOOK);
}

void ldb_batch_end(ldb_state *st)
{
	if (st->npend > 0 && pgconn_is_ok(st->conn)) {
		int at;
		char err[256];
		(void)pgconn_pipe_drain(st->conn, &at, err, sizeof(err));
	}
	st->npend = 0;
	st->nfail = 0;
	st->active = 0;
	st->window_open = 0;
	st->release_pending = 0;
	log_clear(st);
}

void ldb_free(ldb_state *st)
{
	free(st->log);
	free(st->arena);
	free(st->pend);
	free(st->fail);
	st->log = NULL;
	st->arena = NULL;
	st->pend = NULL;
	st->fail = NULL;
	st->caplog = st->cappend = st->capfail = 0;
	st->cap = 0;
}

/* Skip blanks and comments; block comments nest, as in PostgreSQL. */
static const char *skip_blank(const char *p)
{
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v')
			p++;
		if (p[0] == '-' && p[1] == '-') {
			while (*p && *p != '\n')
				p++;
		} else if (p[0] == '/' && p[1] == '*') {
			int depth = 1;
			p += 2;
			while (*p && depth > 0) {
				if (p[0] == '/' && p[1] == '*') {
					depth++;
					p += 2;
				} else if (p[0] == '*' && p[1] == '/') {
					depth--;
					p += 2;
				} else
					p++;
			}
		} else
			return p;
	}
}

/* Does the word at p (letters only) equal w, ignoring case?  Sets *end. */
static int word_is(const char *p, const char *w, const char **end)
{
	size_t n = 0;
	while ((p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z') || p[n] == '_')
		n++;
	*end = p + n;
	return n == strlen(w) && strncasecmp(p, w, n) == 0;
}

static int ident_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '_' || ch == '$' || (unsigned char)ch >= 0x80;
}

/* Past the quoted string or identifier at p (quote q); esc: an E'...'
 * string, where a backslash escapes the next character. */
static const char *skip_quoted(const char *p, int esc)
{
	char q = *p;
	for (p++; *p; p++) {
		if (esc && *p == '\\' && p[1])
			p++;
		else if (*p == q) {
			if (p[1] != q)
				return p + 1;
			p++;   /* '' or "" */
		}
	}
	return p;
}

/* Past the token at p: a word, a quoted string or identifier, a
 * dollar-quoted string, a comment or one character; never past the end. */
static const char *skip_token(const char *p)
{
	if ((p[0] == '-' && p[1] == '-') || (p[0] == '/' && p[1] == '*'))
		return skip_blank(p);
	if (*p == '\'' || *p == '"')
		return skip_quoted(p, 0);
	if (ident_char(*p) && *p != '$' && !(*p >= '0' && *p <= '9')) {
		const char *w = p;
		while (ident_char(*p))
			p++;
		if (p - w == 1 && (*w == 'E' || *w == 'e') && *p == '\'')
			return skip_quoted(p, 1);
		return p;
	}
	if (*p == '$' && !(p[1] >= '0' && p[1] <= '9')) {
		/* $tag$ ... $tag$ (not a $1 parameter) */
		const char *t = p + 1, *close;
		size_t n;
		while (ident_char(*t) && *t != '$')
			t++;
		if (*t != '$')
			return p + 1;
		n = (size_t)(t - p) + 1;
		for (close = t + 1; *close; close++)
			if (strncmp(close, p, n) == 0)
				return close + n;
		return close;
	}
	return *p ? p + 1 : p;
}

/* Does the statement starting at p (blanks skipped) end or nest the
 * batch's transaction? */
static int starts_transaction_control(const char *p)
{
	static const char *const words[] = {"begin", "start", "commit", "end", "rollback", "abort",
	                                    "savepoint", "release", NULL};
	const char *e;
	for (int i = 0; words[i]; i++)
		if (word_is(p, words[i], &e))
			return 1;
	return word_is(p, "prepare", &e) && word_is(skip_blank(e), "transaction", &e);
}

/* Does the statement starting at p close, move or read the runtime's
 * batch cursor by name, or close every cursor?  (The runtime also checks
 * the cursor's rows: this names the event at once.) */
static int starts_cursor_use(const char *p)
{
	const char *e, *end;
	if (!word_is(p, "close", &e) && !word_is(p, "move", &e) && !word_is(p, "fetch", &e))
		return 0;
	if (word_is(p, "close", &e) && word_is(skip_blank(e), "all", &end))
		return 1;
	for (end = e; *end && *end != ';'; end = skip_token(end))
		if ((word_is(end, "pgqlua_batch", &e) && !ident_char(*e)) ||
		    strncmp(end, "\"pgqlua_batch\"", 14) == 0)
			return 1;
	return 0;
}

typedef enum sql_refusal {
	SQL_ALLOWED = 0,
	SQL_TXN_CONTROL,
	SQL_BATCH_CURSOR
} sql_refusal;

/* Look at every statement of sql (a script's statement is one statement
 * for the extended protocol, but the filter does not rely on that):
 * transaction control or the runtime's cursor is refused. */
static sql_refusal statement_refusal(const char *sql)
{
	const char *p = sql;
	for (;;) {
		p = skip_blank(p);
		if (starts_transaction_control(p))
			return SQL_TXN_CONTROL;
		if (starts_cursor_use(p))
			return SQL_BATCH_CURSOR;
		while (*p && *p != ';')
			p = skip_token(p);
		if (!*p)
			return SQL_ALLOWED;
		p++;
	}
}

#define TXN_REFUSED "transaction control (COMMIT, ROLLBACK, ...) is not allowed: the runtime owns the batch's transaction"
#define CURSOR_REFUSED "the cursor pgqlua_batch is the runtime's (it reads the batch with it): CLOSE, MOVE and FETCH on it are not allowed"

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
	const char **params;
	sql_refusal refusal;

	*sql = luaL_checkstring(L, 2);
	*nparams = lua_gettop(L) - 2;
	params = lua_newuserdatauv(L, sizeof(char *) * (size_t)(*nparams > 0 ? *nparams : 1), 0);
	for (int i = 0; i < *nparams; i++)
		params[i] = param_text(L, ud->null_ref, 3 + i, i + 1);
	if (st->sql_failed)
		luaL_error(L, "db:%s: an earlier statement of this event failed (%s); the event's writes will be rolled back",
		           verb, st->sql_error);
	refusal = statement_refusal(*sql);
	if (refusal != SQL_ALLOWED) {
		char msg[256];
		snprintf(msg, sizeof(msg), "db:%s: %s", verb, refusal == SQL_TXN_CONTROL ? TXN_REFUSED : CURSOR_REFUSED);
		set_failed(st, msg);
		luaL_error(L, "%s", msg);
	}
	*paramsp = params;
	return ud;
}

/* Wait for the sends in the pipeline; raises if that fails.  Returns
 * whether a send of this event turned out to have failed (sql_error). */
static int wait_sends(lua_State *L, ldb_state *st, const char *verb) /* MAY_LJMP */
{
	char err[1024];
	if (drain(st, err, sizeof(err)) != 0) {
		set_failed(st, err);
		luaL_error(L, "db:%s: %s", verb, err);
	}
	return st->sql_failed;
}

/* rows, count = db:exec(sql, ...) */
static int ldb_exec(lua_State *L) /* MAY_LJMP */
{
	ldb_ud *ud;
	ldb_state *st;
	const char *sql;
	int nparams;
	const char **params;
	char err[1024];
	const char *pre[2];
	result_guard *guard;
	PGresult *res;
	int nrows, ncols, npre, failed_pre;

	/* stack: 1 handle, 2 sql, 3.. params, then the params array, the guard */
	ud = take_statement(L, "exec", &sql, &nparams, &params);
	st = ud->st;
	/* the sends before it first: their errors come before this statement */
	if (st->npend > 0 && wait_sends(L, st, "exec"))
		return luaL_error(L, "db:exec: an earlier statement of this event failed (%s); the event's writes will be rolled back",
		                  st->sql_error);
	guard = lua_newuserdatauv(L, sizeof(*guard), 0);
	guard->res = NULL;
	luaL_setmetatable(L, RESULT_MT);

	/* the event's savepoint (and the RELEASE of the previous one) ride in
	 * the same round trip as the statement */
	npre = 0;
	if (!st->window_open) {
		if (st->release_pending)
			pre[npre++] = "release savepoint " WINDOW;
		pre[npre++] = "savepoint " WINDOW;
	}
	st->statements++;
	st->event_stmts++;
	st->event_exec = 1;
	if (log_current_level >= LOG_LVL_TRACE)
		log_sql(L, "db:exec", sql, nparams, params);
	res = pgconn_exec_after(st->conn, pre, npre, sql, nparams, params, &failed_pre, err, sizeof(err));
	if (npre > 0 && !failed_pre) {
		st->release_pending = 0;
		st->window_open = 1;
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
		if (failed_pre) {
			/* where the window stands is unknown: the batch must go */
			st->broken = 1;
			return luaL_error(L, "db:exec: cannot take a savepoint: %s", err);
		}
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

/* db:send(sql, ...): queue a write; nothing is returned */
static int ldb_send(lua_State *L) /* MAY_LJMP */
{
	const char *sql;
	int nparams;
	const char **params;
	ldb_state *st = take_statement(L, "send", &sql, &nparams, &params)->st;
	char err[1024];

	if (window_open(st) != 0)
		goto broken;
	if (!st->event_unlogged && (st->nlog >= LOG_MAX || st->used >= ARENA_MAX)) {
		/* the events before this one are checked now, so that only this
		 * one can fail from here on: it needs no log, it is undone whole */
		if (wait_sends(L, st, "send"))
			return luaL_error(L, "%s", st->sql_error);
		st->event_unlogged = 1;
	}
	if (!st->event_unlogged && log_add(st, sql, nparams, params) != 0)
		return luaL_error(L, "db:send: not enough memory");
	st->statements++;
	st->event_stmts++;
	if (log_current_level >= LOG_LVL_TRACE)
		log_sql(L, "db:send", sql, nparams, params);
	if (pipe_send(st, st->event, sql, nparams, params) != 0)
		goto broken;
	if (st->npend >= PIPE_MAX && wait_sends(L, st, "send"))
		return luaL_error(L, "%s", st->sql_error);
	return 0;
broken:
	pgconn_result_error(st->conn, NULL, err, sizeof(err));
	set_failed(st, err);
	return luaL_error(L, "db:send: %s", err);
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

	static const luaL_Reg methods[] = {{"exec", ldb_exec}, {"send", ldb_send}, {NULL, NULL}};
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

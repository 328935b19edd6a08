/*
 * lbridge.c - a consumer script's lua_State (see lbridge.h).  Every entry
 * into Lua goes through docall(): a C trampoline run under lua_pcall with a
 * traceback handler, an optional deadline hook and a memory-limited
 * allocator, so nothing outside a protected call can raise.
 */
#include "lbridge.h"
#include "lhttp.h"
#include "log.h"

#include <lauxlib.h>
#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOAD_TIMEOUT 30.0      /* seconds for top level and init() without event_timeout: pgqlua.rules.LOAD_TIMEOUT */
#define HOOK_COUNT 10000       /* instructions between deadline checks */
#define TRACEBACK_MARK "\nstack traceback:"

struct lb_script {
	lua_State *L;
	const config *cfg;
	ldb_state *db;
	size_t mem_used;
	size_t mem_limit;          /* 0: none */
	int hit_limit;             /* an allocation was refused for the limit */
	double deadline;           /* monotonic seconds; 0: none */
	double timeout;            /* the limit being enforced, for messages */
	int ref_process_event;
	int ref_init;
	int ref_batch_start;
	int ref_batch_end;
	int ref_db;
	int ref_null;
	int ref_ev_keys;
	int ref_map_result;        /* pgqlua.rules: results other than OK */
	int ref_retries_used_up;   /* pgqlua.rules: the max_retries rule */
	int ref_where;             /* where_process_event, for map_result */
	int ref_settle;            /* pgqlua.http.settle: sends into an outcome */
	lua_Integer code_ok;       /* pgqlua.rules.EVENT_OK */
	lhttp *http;               /* pgq.http's transport */
	volatile sig_atomic_t interrupted; /* lb_interrupt was called */
	char wait_msg[160];        /* why a C wait ended */
};

static double now_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *lb_lua_dir(void)
{
	const char *env = getenv("PGQLUA_LUA_DIR");
	if (env && *env)
		return env;
	if (access(PGQLUA_LUA_SRC_DIR "/pgqlua/init.lua", R_OK) == 0)
		return PGQLUA_LUA_SRC_DIR;
	return PGQLUA_LUA_INSTALL_DIR;
}

/* ---- allocator with a limit ---- */

static void *lb_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	lb_script *s = ud;
	size_t old = ptr ? osize : 0;
	void *p;

	if (nsize == 0) {
		free(ptr);
		s->mem_used -= old;
		return NULL;
	}
	if (s->mem_limit && nsize > old && s->mem_used + (nsize - old) > s->mem_limit) {
		s->hit_limit = 1;
		return NULL;
	}
	p = realloc(ptr, nsize);
	if (p)
		s->mem_used = s->mem_used - old + nsize;
	return p;
}

size_t lb_memory_used(const lb_script *s)
{
	return s->mem_used;
}

/* ---- the protected-call path ---- */

static lb_script *script_of(lua_State *L)
{
	void *ud;
	(void)lua_getallocf(L, &ud);
	return ud;
}

static void deadline_hook(lua_State *L, lua_Debug *ar)
{
	lb_script *s = script_of(L);
	(void)ar;
	if (s->deadline > 0 && now_mono() > s->deadline) {
		/* fire again at once if a pcall in the script swallows this */
		char msg[128];
		/* lua_pushfstring knows no precision: format here */
		snprintf(msg, sizeof(msg), "event_timeout exceeded: the script ran for more than %.3g seconds",
		         s->timeout);
		lua_sethook(L, deadline_hook, LUA_MASKCOUNT, 1);
		luaL_error(L, "%s", msg);
	}
}

static void stop_hook(lua_State *L, lua_Debug *ar)
{
	(void)ar;
	lua_sethook(L, stop_hook, LUA_MASKCOUNT, 1);
	luaL_error(L, "stopped: the consumer was told to stop at once");
}

void lb_interrupt(lb_script *s)
{
	if (s)
		s->interrupted = 1;
	if (s && s->L)
		lua_sethook(s->L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

/* lhttp's question between slices of a wait: the Lua hook cannot run
 * while C waits, so the deadline and a stop are checked here, with the
 * hook's texts; the hook is re-armed so that a pcall cannot swallow it. */
static const char *wait_check(void *arg, double *left)
{
	lb_script *s = arg;
	*left = -1;
	if (s->interrupted) {
		lua_sethook(s->L, stop_hook, LUA_MASKCOUNT, 1);
		return "stopped: the consumer was told to stop at once";
	}
	if (s->deadline > 0) {
		double now = now_mono();
		if (now > s->deadline) {
			snprintf(s->wait_msg, sizeof(s->wait_msg),
			         "event_timeout exceeded: the script ran for more than %.3g seconds", s->timeout);
			lua_sethook(s->L, deadline_hook, LUA_MASKCOUNT, 1);
			return s->wait_msg;
		}
		*left = s->deadline - now;
	}
	return NULL;
}

static int msgh(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);
	if (msg == NULL) {
		if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
			msg = lua_tostring(L, -1);
		else
			msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
	}
	luaL_traceback(L, L, msg, 1);
	return 1;
}

/*
 * Run f(ud) protected.  On success the nres results are on the stack above
 * the returned base; on failure err holds the message's first part and the
 * traceback goes to the debug log.  Returns the lua_pcall status.
 */
static int docall(lb_script *s, lua_CFunction f, void *ud, int nres, double timeout,
                  int *base, char *err, size_t errlen)
{
	lua_State *L = s->L;
	int status, h;

	lua_settop(L, 0);
	lua_pushcfunction(L, msgh);
	h = lua_gettop(L);
	lua_pushcfunction(L, f);
	lua_pushlightuserdata(L, ud);
	if (timeout > 0) {
		s->timeout = timeout;
		s->deadline = now_mono() + timeout;
		lua_sethook(L, deadline_hook, LUA_MASKCOUNT, HOOK_COUNT);
	}
	status = lua_pcall(L, 1, nres, h);
	if (timeout > 0) {
		s->deadline = 0;
		lua_sethook(L, NULL, 0, 0);
	}
	*base = h;
	if (status != LUA_OK) {
		const char *m = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
		if (status == LUA_ERRMEM)
			snprintf(err, errlen, "not enough memory (lua_memory_limit is %zu bytes)", s->mem_limit);
		else if (m) {
			const char *tb = strstr(m, TRACEBACK_MARK);
			size_t n = tb ? (size_t)(tb - m) : strlen(m);
			snprintf(err, errlen, "%.*s", (int)n, m);
			if (tb)
				log_debug("%s", m);
		} else
			snprintf(err, errlen, "error in the error handler");
		log_fold(err);
		lua_settop(L, 0);
	}
	return status;
}

static void make_ev_keys(lua_State *L, lb_script *s);

/* where() for pgqlua.rules.map_result: "file:line" of process_event. */
static int where_process_event(lua_State *L)
{
	lb_script *s = script_of(L);
	lua_Debug ar;
	lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref_process_event);
	lua_getinfo(L, ">S", &ar);
	lua_pushfstring(L, "%s:%d", ar.short_src, ar.linedefined);
	return 1;
}

/* ---- pgqlua.host: what the runtime lends lua/pgqlua ---- */

/* host.log(level, message): level 0 error .. 3 debug; the location is the
 * caller of the pgq.log function. */
static int host_log(lua_State *L)
{
	lua_Integer lvl = luaL_checkinteger(L, 1);
	const char *msg = luaL_checkstring(L, 2);
	lua_Debug ar;
	char where[256] = "?";

	if (lvl < LOG_LVL_ERROR || lvl > LOG_LVL_TRACE)
		return luaL_error(L, "bad log level %d", (int)lvl);
	if ((log_level)lvl > log_current_level)
		return 0;
	if (lua_getstack(L, 2, &ar) && lua_getinfo(L, "Sl", &ar))
		snprintf(where, sizeof(where), "%s:%d", ar.short_src, ar.currentline);
	log_write((log_level)lvl, "%s: %s", where, msg);
	return 0;
}

/* host.loadfile(path): a text chunk with the global environment, or nil
 * and the message. */
static int host_loadfile(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	if (luaL_loadfilex(L, path, "t") != LUA_OK) {
		luaL_pushfail(L);
		lua_insert(L, -2);
		return 2;
	}
	return 1;
}

static int host_open(lua_State *L)
{
	static const luaL_Reg fns[] = {{"log", host_log}, {"loadfile", host_loadfile}, {NULL, NULL}};
	luaL_newlib(L, fns);
	lhttp_register(L, script_of(L)->http);
	lua_pushliteral(L, "runtime");
	lua_setfield(L, -2, "name");
	return 1;
}

/* ---- load ---- */

/* require's places, fixed here: the runtime's lua/, the script's folder,
 * the config's lua_path, the system's Lua 5.4 folders.  The sandbox then
 * keeps the package table out of the script's reach. */
static void set_path(lua_State *L, const lb_script *s) /* MAY_LJMP */
{
	const char *lua_dir = lb_lua_dir();
	const char *slash = strrchr(s->cfg->script, '/');
	int dlen = slash ? (int)(slash - s->cfg->script) : 1;
	const char *sdir = slash ? s->cfg->script : ".";

	lua_getglobal(L, "package");
	lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", lua_dir, lua_dir);
	lua_pushlstring(L, sdir, (size_t)dlen);
	lua_pushliteral(L, "/?.lua;");
	lua_pushlstring(L, sdir, (size_t)dlen);
	lua_pushliteral(L, "/?/init.lua;");
	lua_pushstring(L, s->cfg->lua_path ? s->cfg->lua_path : "");
	lua_pushstring(L, s->cfg->lua_path ? ";" : "");
	lua_pushliteral(L, "/usr/local/share/lua/5.4/?.lua;/usr/local/share/lua/5.4/?/init.lua;"
	                   "/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua");
	lua_concat(L, 8);
	lua_setfield(L, -2, "path");
	lua_getfield(L, -1, "preload");
	lua_pushcfunction(L, host_open);
	lua_setfield(L, -2, "pgqlua.host");
	lua_pop(L, 2);
}

/* The config's env_allow as a Lua list. */
static void push_env_allow(lua_State *L, const config *c) /* MAY_LJMP */
{
	const char *p = c->env_allow;
	int n = 0;
	lua_newtable(L);
	while (p && *p) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		lua_pushlstring(L, p, len);
		lua_rawseti(L, -2, ++n);
		p += len + (e != NULL);
	}
}

static int ref_function(lua_State *L, const lb_script *s, const char *name, int required)
{
	int t = lua_getglobal(L, name);
	if (t == LUA_TFUNCTION)
		return luaL_ref(L, LUA_REGISTRYINDEX);
	if (t == LUA_TNIL && !required) {
		lua_pop(L, 1);
		return LUA_NOREF;
	}
	if (t == LUA_TNIL)
		return luaL_error(L, "%s: %s is not defined (the script must define function %s(ev, db))",
		                  s->cfg->script, name, name);
	return luaL_error(L, "%s: %s must be a function, not a %s", s->cfg->script, name,
	                  lua_typename(L, t));
}

static void push_config(lua_State *L, const config *c)
{
	lua_createtable(L, 0, 10);
	lua_pushstring(L, c->queue_name);
	lua_setfield(L, -2, "queue_name");
	lua_pushstring(L, c->consumer_name);
	lua_setfield(L, -2, "consumer_name");
	lua_pushstring(L, c->script);
	lua_setfield(L, -2, "script");
	lua_pushstring(L, c->path);
	lua_setfield(L, -2, "config_file");
	lua_pushnumber(L, c->retry_delay);
	lua_setfield(L, -2, "retry_delay");
	lua_pushinteger(L, c->max_retries);
	lua_setfield(L, -2, "max_retries");
	lua_pushinteger(L, c->fetch_size);
	lua_setfield(L, -2, "fetch_size");
	lua_pushnumber(L, c->loop_delay);
	lua_setfield(L, -2, "loop_delay");
}

static int load_tramp(lua_State *L) /* MAY_LJMP */
{
	static const luaL_Reg libs[] = {
		{LUA_GNAME, luaopen_base},        {LUA_LOADLIBNAME, luaopen_package},
		{LUA_COLIBNAME, luaopen_coroutine}, {LUA_TABLIBNAME, luaopen_table},
		{LUA_STRLIBNAME, luaopen_string}, {LUA_MATHLIBNAME, luaopen_math},
		{LUA_UTF8LIBNAME, luaopen_utf8},  {LUA_OSLIBNAME, luaopen_os},
		{NULL, NULL}};
	lb_script *s = lua_touserdata(L, 1);

	for (const luaL_Reg *lib = libs; lib->func; lib++) {
		luaL_requiref(L, lib->name, lib->func, 1);
		lua_pop(L, 1);
	}
	set_path(L, s);

	/* the shared rules (pgqlua.rules), resolved before the script runs */
	lua_getglobal(L, "require");
	lua_pushliteral(L, "pgqlua.rules");
	lua_call(L, 1, 1);
	lua_getfield(L, -1, "EVENT_OK");
	s->code_ok = lua_tointeger(L, -1);
	lua_pop(L, 1);
	lua_getfield(L, -1, "map_result");
	s->ref_map_result = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_getfield(L, -1, "retries_used_up");
	s->ref_retries_used_up = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pushcfunction(L, where_process_event);
	s->ref_where = luaL_ref(L, LUA_REGISTRYINDEX);
	ldb_open_lib(L, lua_gettop(L));
	lua_pop(L, 1);
	lua_getglobal(L, "require");
	lua_pushliteral(L, "pgqlua.http");
	lua_call(L, 1, 1);
	lua_getfield(L, -1, "settle");
	s->ref_settle = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_pop(L, 1);

	/* the sandbox and the pgq table are Lua, shared with the mock runner;
	 * the pgq table first: it keeps the host module, which the sandbox
	 * then takes out of the script's reach */
	lua_getglobal(L, "require");
	lua_pushliteral(L, "pgqlua");
	lua_call(L, 1, 1);                           /* pgq */
	lua_getglobal(L, "require");
	lua_pushliteral(L, "pgqlua.sandbox");
	lua_call(L, 1, 1);                           /* pgq sandbox */
	lua_getfield(L, -1, "apply");
	lua_pushglobaltable(L);
	lua_createtable(L, 0, 1);
	push_env_allow(L, s->cfg);
	lua_setfield(L, -2, "env_allow");
	lua_call(L, 2, 0);
	lua_pop(L, 1);                               /* pgq */
	lua_getfield(L, -1, "null");
	s->ref_null = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_setglobal(L, "pgq");

	if (luaL_loadfilex(L, s->cfg->script, "t") != LUA_OK)
		return lua_error(L);
	lua_call(L, 0, 0);

	s->ref_process_event = ref_function(L, s, "process_event", 1);
	s->ref_init = ref_function(L, s, "init", 0);
	s->ref_batch_start = ref_function(L, s, "on_batch_start", 0);
	s->ref_batch_end = ref_function(L, s, "on_batch_end", 0);
	make_ev_keys(L, s);
	ldb_push(L, s->db, s->ref_null);
	s->ref_db = luaL_ref(L, LUA_REGISTRYINDEX);

	if (s->ref_init != LUA_NOREF) {
		lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref_init);
		push_config(L, s->cfg);
		lua_call(L, 1, 0);
	}
	return 0;
}

double lb_load_timeout(const config *cfg)
{
	return cfg->event_timeout > 0 ? cfg->event_timeout : LOAD_TIMEOUT;
}

lb_script *lb_script_load(const config *cfg, ldb_state *db, int *out_of_memory, char *err,
                          size_t errlen)
{
	lb_script *s = calloc(1, sizeof(*s));
	int base, status, oom;

	if (!out_of_memory)
		out_of_memory = &oom;
	*out_of_memory = 1;
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->cfg = cfg;
	s->db = db;
	s->ref_process_event = s->ref_init = s->ref_batch_start = s->ref_batch_end = LUA_NOREF;
	s->ref_db = s->ref_null = s->ref_ev_keys = LUA_NOREF;
	s->ref_map_result = s->ref_retries_used_up = s->ref_where = s->ref_settle = LUA_NOREF;
	s->http = lhttp_new(cfg, wait_check, s, err, errlen);
	if (!s->http) {
		free(s);
		return NULL;
	}
	s->L = lua_newstate(lb_alloc, s);
	if (!s->L) {
		lhttp_free(s->http);
		free(s);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	/* most garbage is an event's table and strings, dead by the next
	 * event: the generational collector frees it cheaply */
	lua_gc(s->L, LUA_GCGEN, 0, 0);
	/* the limits hold for the top level and init() too */
	s->mem_limit = (size_t)cfg->lua_memory_limit;
	status = docall(s, load_tramp, s, 0, lb_load_timeout(cfg), &base, err, errlen);
	if (status != LUA_OK) {
		/* past lua_memory_limit is the script's doing; anything else is
		 * the machine's */
		*out_of_memory = status == LUA_ERRMEM && !s->hit_limit;
		if (*out_of_memory)
			snprintf(err, errlen, "out of memory loading the script %s", cfg->script);
		lb_script_free(s);
		return NULL;
	}
	*out_of_memory = 0;
	lua_settop(s->L, 0);
	return s;
}

void lb_script_free(lb_script *s)
{
	if (!s)
		return;
	if (s->L)
		lua_close(s->L);
	lhttp_free(s->http);   /* after the state: its requests' __gc use it */
	free(s);
}

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
static void make_ev_keys(lua_State *L, lb_script *s)
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
	status = docall(s, event_tramp, &ec, 3, s->cfg->event_timeout, &base, out->msg, sizeof(out->msg));
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

	if (docall(s, settle_tramp, &sc, 3, s->cfg->event_timeout, &base, msg, sizeof(msg)) != LUA_OK) {
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
	if (docall(s, retry_tramp, &rc, 1, 0, &base, reason, len) != LUA_OK) {
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
	if (docall(s, hook_tramp, &hc, 0, s->cfg->event_timeout, &base, err, errlen) != LUA_OK)
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

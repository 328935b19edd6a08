/*
 * lbridge.c - a consumer script's lua_State (see lbridge.h).  Every entry
 * into Lua goes through docall(): a C trampoline run under lua_pcall with a
 * traceback handler, an optional deadline hook and a memory-limited
 * allocator, so nothing outside a protected call can raise.  The calls
 * for events, the retry rule and batch hooks are in lbcall.c.
 */
#include "lbridge_int.h"
#include "clock.h"
#include "lhttp.h"
#include "log.h"

#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOAD_TIMEOUT 30.0      /* seconds for top level and init() without event_timeout: pgqlua.rules.LOAD_TIMEOUT */
#define HOOK_COUNT 10000       /* instructions between deadline checks */
#define TRACEBACK_MARK "\nstack traceback:"



/* dir/PGQLUA_LUA_FROM_BIN into out when the modules are there (an
 * installed program: the prefix it was installed or unpacked under). */
static int lua_dir_beside_program(char *out, size_t len)
{
	char exe[PATH_MAX], probe[PATH_MAX + 64];
	char *slash;
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return 0;
	exe[n] = '\0';
	if (!(slash = strrchr(exe, '/')))
		return 0;
	*slash = '\0';
	snprintf(probe, sizeof(probe), "%s/" PGQLUA_LUA_FROM_BIN "/pgqlua/init.lua", exe);
	if (access(probe, R_OK) != 0)
		return 0;
	snprintf(out, len, "%s/" PGQLUA_LUA_FROM_BIN, exe);
	return 1;
}

const char *lb_lua_dir(void)
{
	static char beside[PATH_MAX + 64];
	static int looked;
	const char *env = getenv("PGQLUA_LUA_DIR");
	if (env && *env)
		return env;
	if (!looked)
		looked = lua_dir_beside_program(beside, sizeof(beside)) ? 1 : -1;
	if (looked > 0)
		return beside;
	if (access(PGQLUA_LUA_SRC_DIR "/pgqlua/init.lua", R_OK) == 0)
		return PGQLUA_LUA_SRC_DIR;   /* the program in its build tree */
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

lb_script *lb_script_of(lua_State *L)
{
	void *ud;
	(void)lua_getallocf(L, &ud);
	return ud;
}

static void deadline_hook(lua_State *L, lua_Debug *ar)
{
	lb_script *s = lb_script_of(L);
	(void)ar;
	if (s->deadline > 0 && clock_mono() > s->deadline) {
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
		double now = clock_mono();
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
int lb_docall(lb_script *s, lua_CFunction f, void *ud, int nres, double timeout,
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
		s->deadline = clock_mono() + timeout;
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


/* where() for pgqlua.rules.map_result: "file:line" of process_event. */
static int where_process_event(lua_State *L)
{
	lb_script *s = lb_script_of(L);
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
	lhttp_register(L, lb_script_of(L)->http);
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

/* A list of names of the config (env_allow, lua_modules) as a Lua list. */
static void push_names(lua_State *L, const char *p) /* MAY_LJMP */
{
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
	lua_createtable(L, 0, 2);
	push_names(L, s->cfg->env_allow);
	lua_setfield(L, -2, "env_allow");
	push_names(L, s->cfg->lua_modules);
	lua_setfield(L, -2, "lua_modules");
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
	lb_make_ev_keys(L, s);
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
	status = lb_docall(s, load_tramp, s, 0, lb_load_timeout(cfg), &base, err, errlen);
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


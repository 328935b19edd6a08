/*
 * luatest.c - `pgqlua test SCRIPT EVENTS` (see luatest.h).  The runner is
 * Lua, shared with busted; this file only opens a state with the standard
 * libraries, points package.path at the runtime's lua/ folder and calls
 * require("pgqlua.cli_test").main(args).  It lends the runner
 * pgqlua.clock, a wall clock for event_timeout (CLOCK_MONOTONIC seconds).
 */
#include "luatest.h"
#include "lbridge.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <time.h>

static int clock_now(lua_State *L)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
	return 1;
}

static int clock_open(lua_State *L)
{
	lua_pushcfunction(L, clock_now);
	return 1;
}

static int traceback(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);
	luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
	return 1;
}

int luatest_main(int argc, char **argv)
{
	lua_State *L = luaL_newstate();
	int rc = 70;

	if (!L) {
		fprintf(stderr, "pgqlua: out of memory\n");
		return rc;
	}
	luaL_openlibs(L);
	lua_getglobal(L, "package");
	lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;/usr/local/share/lua/5.4/?.lua;"
	                   "/usr/local/share/lua/5.4/?/init.lua;/usr/share/lua/5.4/?.lua;"
	                   "/usr/share/lua/5.4/?/init.lua",
	                lb_lua_dir(), lb_lua_dir());
	lua_setfield(L, -2, "path");
	lua_getfield(L, -1, "preload");
	lua_pushcfunction(L, clock_open);
	lua_setfield(L, -2, "pgqlua.clock");
	lua_pop(L, 2);

	lua_pushcfunction(L, traceback);
	lua_getglobal(L, "require");
	lua_pushliteral(L, "pgqlua.cli_test");
	if (lua_pcall(L, 1, 1, 1) != LUA_OK) {
		fprintf(stderr, "pgqlua: test: cannot load the test runner: %s\n", lua_tostring(L, -1));
		goto out;
	}
	lua_getfield(L, -1, "main");
	lua_createtable(L, argc, 0);
	for (int i = 0; i < argc; i++) {
		lua_pushstring(L, argv[i]);
		lua_rawseti(L, -2, i + 1);
	}
	if (lua_pcall(L, 1, 1, 1) != LUA_OK) {
		fprintf(stderr, "pgqlua: test: %s\n", lua_tostring(L, -1));
		goto out;
	}
	rc = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : 70;
out:
	lua_close(L);
	return rc;
}

/*
 * fuzz_payload.c - libFuzzer target for the payload decoders of
 * lua/pgqlua/payload.lua: pgq.urldecode (pgq.logutriga rows) and
 * pgq.json_decode (pgq.jsontriga rows, through dkjson).  Any bytes must
 * give a value or an error whose message starts with "pgq.urldecode:" or
 * "pgq.json_decode:"; any other error, a non-string error, a crash, a run
 * of more than FUZZ_MAX_STEPS Lua instructions or more than FUZZ_MEM_LIMIT
 * bytes of Lua memory is a finding (abort()).
 *
 * On success it also checks: urldecode gives string keys and string or
 * pgq.null values, and re-encoding that table decodes to the same table;
 * json_decode gives Lua integers for plain integer tokens.
 *
 * The Lua interpreter is not instrumented, so a line hook feeds libFuzzer
 * Lua line-to-line edges through its extra-counters section: the fuzzer
 * sees the coverage of payload.lua and dkjson.lua.
 *
 * PGQLUA_LUA_DIR (environment) overrides the lua/ folder built in.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef PGQLUA_LUA_SRC_DIR
#define PGQLUA_LUA_SRC_DIR "lua"
#endif

#define FUZZ_MAX_STEPS 200000000L        /* Lua VM instructions per input */
#define FUZZ_HOOK_COUNT 1000
#define FUZZ_MEM_LIMIT (512u << 20)       /* bytes of Lua memory */
#define SLOW_MARK "fuzz_payload: instruction limit"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* libFuzzer reads this section after each input as extra coverage. */
#define LUA_COV_SIZE 65536
__attribute__((used, section("__libfuzzer_extra_counters")))
static uint8_t lua_cov[LUA_COV_SIZE];

static lua_State *L;
static size_t mem_used;
static long steps;
static uintptr_t prev_loc;
static int ref_url, ref_json, ref_check_url, ref_check_json;

static void die(const char *what, const char *msg)
{
	fprintf(stderr, "fuzz_payload: %s: %s\n", what, msg ? msg : "(no message)");
	abort();
}

static void *alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
	(void)ud;
	if (ptr == NULL)
		osize = 0;
	if (nsize == 0) {
		free(ptr);
		mem_used -= osize;
		return NULL;
	}
	if (nsize > osize && mem_used + (nsize - osize) > FUZZ_MEM_LIMIT)
		return NULL;
	ptr = realloc(ptr, nsize);
	if (ptr)
		mem_used = mem_used - osize + nsize;
	return ptr;
}

static void hook(lua_State *l, lua_Debug *ar)
{
	if (ar->event == LUA_HOOKCOUNT) {
		steps += FUZZ_HOOK_COUNT;
		if (steps > FUZZ_MAX_STEPS) {
			lua_sethook(l, hook, LUA_MASKCOUNT, 1);   /* again at once if swallowed */
			luaL_error(l, "%s", SLOW_MARK);
		}
		return;
	}
	if (ar->event == LUA_HOOKLINE && lua_getinfo(l, "S", ar)) {
		/* the source string lives as long as the chunk: its address names it */
		uintptr_t cur = (uintptr_t)ar->source * 2654435761u + (uintptr_t)ar->currentline * 40503u;
		cur ^= cur >> 15;
		lua_cov[(cur ^ prev_loc) % LUA_COV_SIZE]++;
		prev_loc = cur >> 1;
	}
}

static int host_log(lua_State *l)
{
	(void)luaL_checkinteger(l, 1);
	(void)luaL_checkstring(l, 2);
	return 0;
}

static int host_loadfile(lua_State *l)
{
	const char *path = luaL_checkstring(l, 1);
	if (luaL_loadfilex(l, path, "t") != LUA_OK) {
		luaL_pushfail(l);
		lua_insert(l, -2);
		return 2;
	}
	return 1;
}

static int host_open(lua_State *l)
{
	static const luaL_Reg fns[] = {{"log", host_log}, {"loadfile", host_loadfile}, {NULL, NULL}};
	luaL_newlib(l, fns);
	lua_pushliteral(l, "fuzz");
	lua_setfield(l, -2, "name");
	return 1;
}

/* Invariant checks on a decoder's result: return nothing when fine, or a
 * message.  Arguments: payload module, input, result. */
static const char checks_lua[] =
	"local payload = ...\n"
	"local null, urldecode = payload.null, payload.urldecode\n"
	"local function esc(s)\n"
	"  return (s:gsub('[^%w]', function(c) return string.format('%%%02X', c:byte()) end))\n"
	"end\n"
	"local function check_url(s, t)\n"
	"  if type(t) ~= 'table' then return 'urldecode returned a ' .. type(t) end\n"
	"  local parts = {}\n"
	"  for k, v in pairs(t) do\n"
	"    if type(k) ~= 'string' then return 'urldecode gave a key of type ' .. type(k) end\n"
	"    if v ~= null and type(v) ~= 'string' then return 'urldecode gave a value of type ' .. type(v) end\n"
	"    if v == null and k == '' then return 'urldecode gave pgq.null for the empty key' end\n"
	"    parts[#parts + 1] = v == null and esc(k) or esc(k) .. '=' .. esc(v)\n"
	"  end\n"
	"  local t2 = urldecode(table.concat(parts, '&'))\n"
	"  for k, v in pairs(t) do\n"
	"    if t2[k] ~= v then return string.format('urldecode round trip: key %q', k) end\n"
	"  end\n"
	"  for k in pairs(t2) do\n"
	"    if t[k] == nil then return string.format('urldecode round trip: extra key %q', k) end\n"
	"  end\n"
	"end\n"
	"local ws = '[ \\t\\r\\n]*'\n"
	"local function same_int(tok, v)\n"
	"  if #tok:gsub('^%-', '') > 18 then return true end\n"
	"  return math.type(v) == 'integer' and v == math.tointeger(tonumber(tok))\n"
	"end\n"
	"local function check_json(s, v)\n"
	"  local tok = s:match('^' .. ws .. '(%-?%d+)' .. ws .. '$')\n"
	"  if tok and not same_int(tok, v) then\n"
	"    return 'json_decode(' .. tok .. ') gave ' .. tostring(v) .. ' (' .. tostring(math.type(v)) .. ')'\n"
	"  end\n"
	"  local inner = s:match('^' .. ws .. '%[([%d%-,%s]*)%]' .. ws .. '$')\n"
	"  if inner and type(v) == 'table' then\n"
	"    local i = 0\n"
	"    for t in inner:gmatch('%-?%d+') do\n"
	"      i = i + 1\n"
	"      if v[i] ~= nil and not same_int(t, v[i]) then\n"
	"        return 'json_decode: element ' .. i .. ' (' .. t .. ') gave ' .. tostring(v[i])\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"end\n"
	"return check_url, check_json\n";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("PGQLUA_LUA_DIR");
	char path[4096];
	(void)argc;
	(void)argv;

	if (!dir || !*dir)
		dir = PGQLUA_LUA_SRC_DIR;
	L = lua_newstate(alloc, NULL);
	if (!L)
		die("init", "lua_newstate failed");
	luaL_openlibs(L);
	snprintf(path, sizeof(path), "%s/?.lua;%s/?/init.lua;/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua",
	         dir, dir);
	lua_getglobal(L, "package");
	lua_pushstring(L, path);
	lua_setfield(L, -2, "path");
	lua_getfield(L, -1, "preload");
	lua_pushcfunction(L, host_open);
	lua_setfield(L, -2, "pgqlua.host");
	lua_pop(L, 2);

	lua_getglobal(L, "require");
	lua_pushliteral(L, "pgqlua.payload");
	if (lua_pcall(L, 1, 1, 0) != LUA_OK)
		die("require \"pgqlua.payload\"", lua_tostring(L, -1));
	lua_getfield(L, -1, "urldecode");
	ref_url = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_getfield(L, -1, "json_decode");
	ref_json = luaL_ref(L, LUA_REGISTRYINDEX);
	if (luaL_loadbufferx(L, checks_lua, sizeof(checks_lua) - 1, "=fuzz_checks", "t") != LUA_OK)
		die("checks", lua_tostring(L, -1));
	lua_insert(L, -2);   /* chunk, payload */
	if (lua_pcall(L, 1, 2, 0) != LUA_OK)
		die("checks", lua_tostring(L, -1));
	ref_check_json = luaL_ref(L, LUA_REGISTRYINDEX);
	ref_check_url = luaL_ref(L, LUA_REGISTRYINDEX);
	lua_settop(L, 0);
	return 0;
}

/* Call decoder(s); an error must be a string starting with prefix.  On
 * success call check(s, result): it returns nil or a finding. */
static void run(int ref, int check_ref, const char *prefix, const uint8_t *data, size_t size)
{
	int status;

	steps = 0;
	prev_loc = 0;
	lua_sethook(L, hook, LUA_MASKLINE | LUA_MASKCOUNT, FUZZ_HOOK_COUNT);
	lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
	lua_pushlstring(L, (const char *)data, size);
	status = lua_pcall(L, 1, 1, 0);
	lua_sethook(L, NULL, 0, 0);
	if (status != LUA_OK) {
		const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
		if (status == LUA_ERRMEM)
			die(prefix, "more than FUZZ_MEM_LIMIT bytes of Lua memory for one input");
		if (!msg)
			die(prefix, "an error that is not a string");
		if (strstr(msg, SLOW_MARK))
			die(prefix, "more than FUZZ_MAX_STEPS Lua instructions for one input");
		if (strncmp(msg, prefix, strlen(prefix)) != 0)
			die("an error without the decoder's prefix", msg);
		lua_settop(L, 0);
		return;
	}
	lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
	lua_pushlstring(L, (const char *)data, size);
	lua_pushvalue(L, -3);
	if (lua_pcall(L, 2, 1, 0) != LUA_OK)
		die("check raised", lua_tostring(L, -1));
	if (!lua_isnil(L, -1))
		die("check failed", lua_tostring(L, -1));
	lua_settop(L, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	run(ref_url, ref_check_url, "pgq.urldecode:", data, size);
	run(ref_json, ref_check_json, "pgq.json_decode:", data, size);
	/* free this input's garbage now: libFuzzer then sees as many frees as
	 * mallocs and skips its leak scan of the (long-lived) Lua heap */
	lua_gc(L, LUA_GCCOLLECT);
	return 0;
}

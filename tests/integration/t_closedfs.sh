#!/usr/bin/env bash
# A script cannot read files or secrets through require or os.getenv: the
# package table is the runtime's (path and searchers fixed, lua_path adds
# places), the host module is out of reach, module names are never paths,
# an unloadable module's error never quotes its file, and os.getenv reads
# only the variables of env_allow.  Every trick fails with an error that
# holds no byte of the file it aimed at.
source "$(dirname "$0")/lib.sh"
reset_queues q_closedfs
sql "drop table if exists r_closedfs; create table r_closedfs (n int, name text, ok bool, result text)" > /dev/null
mkdir -p "$WORK/private" "$WORK/extra" "$WORK/helpers"
printf 'db: host=x password=SeCrEtPw\nroot:$6$SeCrEtHash:19000:0:99999:7:::\n' > "$WORK/private/secret.lua"
printf 'return { answer = 42 }\n' > "$WORK/helpers/util.lua"
printf 'return { from = "lua_path" }\n' > "$WORK/extra/extmod.lua"
new_consumer q_closedfs c_closedfs "$(cat <<'LUA'
local results = {}
local function try(name, f)
  local ok, res = pcall(f)
  results[#results + 1] = { name, ok, tostring(res) }
end
function init(cfg)
  local conf = cfg.config_file
  try("package.path", function() package.path = conf; return require "z" end)
  try("rawset package.path", function() rawset(package, "path", conf); return require "z" end)
  try("require pgqlua.host", function() return require("pgqlua.host").loadfile(conf) end)
  try("package.preload host", function() return package.preload["pgqlua.host"]().loadfile(conf) end)
  try("package.loaded host", function() return package.loaded["pgqlua.host"].loadfile(conf) end)
  try("package.searchers", function() return package.searchers[2]("x") end)
  try("package.searchpath", function() return package.searchpath("x", conf) end)
  try("package.loadlib", function() return package.loadlib(conf, "x") end)
  try("require /etc/shadow", function() return require "/etc/shadow" end)
  try("require ../", function() return require "..private.secret" end)
  try("require a file that is not Lua", function() return require "private.secret" end)
  try("the sandbox's searcher", function()
    return require("pgqlua.sandbox").text_searcher({ path = conf, searchpath = function() return conf end })("x")
  end)
  try("os.getenv PGPASSWORD", function() return os.getenv("PGPASSWORD") end)
  try("os.getenv HOME", function() return os.getenv("HOME") end)
  try("os.getenv allowed", function() return os.getenv("PGQLUA_TEST_ALLOWED") end)
  try("own module", function() return require("helpers.util").answer end)
  try("lua_path module", function() return require("extmod").from end)
end
function process_event(ev, db)
  for i, r in ipairs(results) do
    db:exec("insert into r_closedfs values ($1, $2, $3, $4)", i, r[1], r[2], r[3])
  end
  results = {}
end
LUA
)" "lua_path: extra/?.lua
env_allow:
  - PGQLUA_TEST_ALLOWED"
sed -i 's/ dbname=pgqlua_test"/ dbname=pgqlua_test password=SeCrEtPw"/' "$WORK/c_closedfs.yaml"
sql "select pgq.insert_event('q_closedfs', 'x', 'x')" > /dev/null
PGPASSWORD=SeCrEtPw PGQLUA_TEST_ALLOWED=visible drain q_closedfs c_closedfs 60 || fail "q_closedfs did not drain"

expect_eq "every trick ran" "17" "$(sql "select count(*) from r_closedfs")"
expect_eq "no result holds a byte of the config, the secret file or /etc/shadow" "" \
	"$(sql "select string_agg(name || ': ' || result, E'\n') from r_closedfs
	        where result ~ 'SeCrEt|password|root:|\\\$6\\\$|host=|queue_name|dbname'")"
expect_eq "every file trick failed" "" \
	"$(sql "select string_agg(name, ', ') from r_closedfs where ok and name not like 'os.getenv%' and name not in ('own module', 'lua_path module')")"
expect_eq "package.path cannot be changed" \
	"package.path cannot be changed: where require looks is set by the runtime (lua_path in the config)" \
	"$(sql "select regexp_replace(result, '^.*:[0-9]+: ', '') from r_closedfs where name = 'package.path'")"
expect_match "rawset on the package view changes nothing: the fixed places are searched" \
	"module 'z' not found:.*no file '$WORK/z.lua'" "$(sql "select result from r_closedfs where name = 'rawset package.path'")"
expect_match "the host module is not found" "module 'pgqlua.host' not found" \
	"$(sql "select result from r_closedfs where name = 'require pgqlua.host'")"
expect_match "a path as a module name is refused" "no module name '/etc/shadow': names are words" \
	"$(sql "select result from r_closedfs where name = 'require /etc/shadow'")"
expect_match "a file that is not Lua is named, not quoted" \
	"error loading module 'private.secret' from file '$WORK/private/secret.lua':.*not valid Lua text \(line 1\)\$" \
	"$(sql "select result from r_closedfs where name = 'require a file that is not Lua'")"
expect_eq "os.getenv: PGPASSWORD and HOME read as nil, env_allow's variable is read" "nil nil visible" \
	"$(sql "select string_agg(result, ' ' order by n) from r_closedfs where name like 'os.getenv%'")"
expect_eq "the script's own modules and lua_path's are found" "42 lua_path" \
	"$(sql "select string_agg(result, ' ' order by n) from r_closedfs where name in ('own module', 'lua_path module')")"
if grep -q "SeCrEt" "$WORK/c_closedfs.log"; then fail "the log holds a secret"; else ok "the log holds no secret"; fi
finish

#!/usr/bin/env bash
# What a script sees: require of its own modules and of "pgqlua", the
# sandbox, db:exec parameters and result types, pgq.log with file:line.
source "$(dirname "$0")/lib.sh"
reset_queues q_script q_cmod

sql "drop table if exists r_script; create table r_script (k text primary key, v text)"
mkdir -p "$WORK/mylib"
cat > "$WORK/mylib/pricing.lua" <<'LUA'
local M = {}
function M.with_vat(x) return x * 1.25 end
return M
LUA
new_consumer q_script c_script '
local pricing = require "mylib.pricing"
local same = (require "pgqlua") == pgq
local function put(db, k, v) db:exec("insert into r_script values ($1, $2)", k, tostring(v)) end
function process_event(ev, db)
  put(db, "require user module", pricing.with_vat(100))
  put(db, "require pgqlua is pgq", same)
  put(db, "sandbox", table.concat({ type(io), type(debug), type(os.exit), type(dofile), type(loadfile),
                                     type(os.time), type(string.format) }, ","))
  local rows, n = db:exec("select $1::int as i, $2::text as t, $3::bool as b, $4::float8 as f, $5::text as nul,"
                          .. " $6::numeric as num, $7::int8 as big",
                          42, "x", true, 1.5, nil, "12.30", 9007199254740993)
  local r = rows[1]
  put(db, "exec result", table.concat({ n, math.type(r.i), r.t, tostring(r.b), math.type(r.f),
                                        tostring(r.nul == pgq.null), type(r.num), r.num, tostring(r.big) }, ","))
  local _, count = db:exec("update r_script set v = v where k like $1", "require%")
  put(db, "exec count", count)
  local ok, err = pcall(db.exec, db, "select $1::int", {})
  put(db, "bad param", err)
  pgq.log.info("hello %s", ev.data)
end' "max_retries: 0"
sql "select pgq.insert_event('q_script', 'x', 'world')" > /dev/null
drain q_script c_script || fail "q_script did not drain"
got() { sql "select v from r_script where k = '$1'"; }
expect_eq "a script requires a module from its own folder" "125.0" "$(got "require user module")"
expect_eq "require \"pgqlua\" is the pgq table" "true" "$(got "require pgqlua is pgq")"
expect_eq "no io, debug, os.exit, dofile, loadfile; os.time and string stay" \
	"nil,nil,nil,nil,nil,function,function" "$(got sandbox)"
expect_eq "db:exec sends numbers, booleans, nil as text/NULL and converts results" \
	"1,integer,x,true,float,true,string,12.30,9007199254740993" "$(got "exec result")"
expect_eq "db:exec returns the affected row count" "2" "$(got "exec count")"
expect_match "a table parameter is a clear error" \
	"db:exec: parameter 1 is a table \(expected a string, number, boolean, nil or pgq.null\)" "$(got "bad param")"
expect_match "pgq.log writes to the runtime log with the script's file:line" \
	"INFO consumer=c_script batch=[0-9]+ .*c_script.lua:20: hello world" "$(cat "$WORK/c_script.log")"
expect_eq "nothing went to the failed table" "0" "$(sql "select count(*) from pgqlua.failed_event where queue_name = 'q_script'")"

# ---- lua_modules: a listed C module loads (lpeg, Debian's lua-lpeg), others are refused
new_consumer q_cmod c_cmod "
function process_event(ev, db)
  local m = require(ev.data)
  local v = ev.data == 'lpeg' and m.match(m.C(m.R('09')^1), 'x42y', 2) or tostring(m)
  db:exec('insert into r_script values (\$1, \$2)', 'cmod ' .. ev.data, v)
end" "max_retries: 0
lua_modules: [lpeg]"
sql "select pgq.insert_event('q_cmod', 'x', m) from unnest(array['lpeg', 'yaml']) m" > /dev/null
drain q_cmod c_cmod || fail "q_cmod did not drain"
expect_eq "a C module lua_modules lists loads and works" "42" "$(got "cmod lpeg")"
expect_match "a C module it does not list is refused, saying so" \
	"module 'yaml' is a C module \(/usr/lib/[^)]*yaml.so\): it loads only when lua_modules in the config lists it" \
	"$(sql "select reason from pgqlua.failed_event where queue_name = 'q_cmod'")"
finish

#!/usr/bin/env bash
# Rows captured by pgq's own pgq.logutriga and pgq.jsontriga triggers reach
# the script and decode as expected with pgq.urldecode and pgq.json_decode.
source "$(dirname "$0")/lib.sh"
reset_queues q_trig

sql "drop table if exists trig_lu, trig_js, r_trig;
     create table r_trig (ev_id bigint primary key, line text);"
new_consumer q_trig c_trig '
local function show(v)
  if v == pgq.null then return "<null>" end
  return math.type(v) or type(v) == "boolean" and "bool:" .. tostring(v) or tostring(v)
end
local function line(t, keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    parts[#parts + 1] = k .. "=" .. (v == pgq.null and "<null>" or tostring(v)) .. "(" .. show(v) .. ")"
  end
  return table.concat(parts, " ")
end
local keys = { "id", "name", "note", "price", "ok" }
function process_event(ev, db)
  local out
  if ev.type:sub(1, 1) == "{" then
    local t = pgq.json_decode(ev.type)
    out = "json " .. t.op .. " " .. table.concat(t.table, ".") .. " pk=" .. t.pkey[1] .. " " .. ev.extra1
          .. " " .. line(pgq.json_decode(ev.data), keys)
  else
    out = "url " .. ev.type .. " " .. ev.extra1 .. " " .. line(pgq.urldecode(ev.data), keys)
  end
  db:exec("insert into r_trig values ($1, $2)", ev.id, out)
end'

sql "create table trig_lu (id int primary key, name text, note text, price numeric, ok bool);
     create table trig_js (id int primary key, name text, note text, price numeric, ok bool);
     create trigger lu after insert or update or delete on trig_lu for each row execute procedure pgq.logutriga('q_trig');
     create trigger js after insert or update or delete on trig_js for each row execute procedure pgq.jsontriga('q_trig');
     insert into trig_lu values (1, 'a b&c=d%', null, 1.5, true);
     update trig_lu set name = 'é' where id = 1;
     delete from trig_lu;
     insert into trig_js values (1, 'a \"q\" é', null, 1.5, true);
     update trig_js set ok = false where id = 1;
     delete from trig_js;"
drain q_trig c_trig || fail "q_trig did not drain"

expected='url I:id public.trig_lu id=1(1) name=a b&c=d%(a b&c=d%) note=<null>(<null>) price=1.5(1.5) ok=t(t)
url U:id public.trig_lu id=1(1) name=é(é) note=<null>(<null>) price=1.5(1.5) ok=t(t)
url D:id public.trig_lu id=1(1) name=é(é) note=<null>(<null>) price=1.5(1.5) ok=t(t)
json INSERT public.trig_js pk=id public.trig_js id=1(integer) name=a "q" é(a "q" é) note=<null>(<null>) price=1.5(1.5) ok=true(bool:true)
json UPDATE public.trig_js pk=id public.trig_js id=1(integer) name=a "q" é(a "q" é) note=<null>(<null>) price=1.5(1.5) ok=false(bool:false)
json DELETE public.trig_js pk=id public.trig_js id=1(integer) name=a "q" é(a "q" é) note=<null>(<null>) price=1.5(1.5) ok=false(bool:false)'
expect_eq "logutriga and jsontriga rows decode: NULL is pgq.null, JSON integers stay integers" \
	"$expected" "$(sql "select string_agg(line, E'\n' order by ev_id) from r_trig")"

# a malformed payload is a clear script error, not a crash
sql "select pgq.insert_event('q_trig', '{\"op\":', 'x')" > /dev/null
drain q_trig c_trig || fail "q_trig did not drain after a malformed event"
expect_match "a malformed jsontriga payload is a script error naming the decoder" \
	"script error: .*c_trig.lua:[0-9]+: pgq.json_decode: " "$(cat "$WORK/c_trig.log")"
finish

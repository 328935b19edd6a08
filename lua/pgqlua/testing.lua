--- pgqlua.testing - the mock batch runner: run a consumer script on events
-- without PostgreSQL, as the runtime would, and see what it did.
--
--   local testing = require "pgqlua.testing"
--   local consumer = testing.load("scripts/audit_rows.lua")
--   consumer:answer("select price", { { price = 10 } })     -- scripted db:exec answers
--   local run = consumer:run({ testing.logutriga{ op = "I", table = "public.t", row = { id = 1 } } })
--   assert.outcome(run[1], "OK")                              -- busted assertions, see below
--   assert.executed(run[1], "insert into audit", 1, "insert")
--
-- The script is loaded exactly as lbridge.c loads it: the sandbox's globals
-- (pgqlua.sandbox), the same `pgq` table (lua/pgqlua/init.lua), the same
-- require path (lua/, the script's folder, the system's Lua 5.4 folders;
-- text chunks only); process_event's results are mapped with the same rules
-- and the same error texts as event_tramp, and the runtime's rules after the
-- script (consumer.c) are applied: max_retries, retry_delay, an SQL error
-- the script swallowed, rollback of a non-OK event's writes.
--
-- The rules themselves (result codes and mapping, the transaction-control
-- refusal, parameter text, max_retries, the defaults) are pgqlua.rules,
-- the module the runtime loads into each script's state.
--
-- The script is isolated from the runner: each load gets an environment
-- with its own copies of the libraries, its own `pgq` and pgq.null, and
-- its own string metatable (installed while its code runs, the runner's
-- while the runner's runs), so a script that replaces string.format or
-- getmetatable("").__index changes neither the runner nor the next
-- script.  event_timeout is wall-clock time and reaches into coroutines;
-- the top level and init() have rules.load_timeout(config) seconds
-- (event_timeout when set, else 30), as in the runtime.
--
-- Differences from the runtime: the script runs in an environment table of
-- the runner's Lua state (C functions are shared), `db` is a table rather
-- than a userdata, db:exec answers from the script's answers (by default
-- no rows and a count of 0), and lua_memory_limit is not enforced.
local sandbox = require "pgqlua.sandbox"
local payload = require "pgqlua.payload"
local rules = require "pgqlua.rules"
local http = require "pgqlua.http"
local mail = require "pgqlua.mail"
local json = require "dkjson"

local M = {}

--- SQL NULL in events, answers and expectations (each script has its own
-- pgq.null; the runner translates).
M.null = payload.null
M.EVENT_OK, M.EVENT_FAILED, M.EVENT_RETRY, M.ABORT_BATCH = rules.EVENT_OK, rules.EVENT_FAILED,
  rules.EVENT_RETRY, rules.ABORT_BATCH

--- The runtime's defaults for what init(config) sees and the rules use
-- (pgqlua.rules.DEFAULTS), and the mock's queue and consumer names.
M.DEFAULT_CONFIG = { queue_name = "test_queue", consumer_name = "test_consumer" }
for k, v in pairs(rules.DEFAULTS) do M.DEFAULT_CONFIG[k] = v end

local MSG_MAX = 1023          -- lb_result.msg holds 1023 bytes
local LOG_MAX = 2047          -- one log message holds 2047 bytes
local REASON_MAX = 1199       -- consumer.c's failed reason holds 1199 bytes
local TRACEBACK_MARK = "\nstack traceback:"
local HOOK_COUNT = 10000      -- instructions between deadline checks (lbridge.c)

-- the runner's own library functions, taken before any script runs
local sfind, sformat, ssub = string.find, string.format, string.sub
local getinfo, sethook, traceback = debug.getinfo, debug.sethook, debug.traceback
local dgetmetatable, dsetmetatable = debug.getmetatable, debug.setmetatable
local co_create, co_resume, co_status, co_close, co_running = coroutine.create, coroutine.resume,
  coroutine.status, coroutine.close, coroutine.running

-- Wall-clock seconds, as the runtime's deadline: `pgqlua test` lends
-- pgqlua.clock (CLOCK_MONOTONIC); under busted luasystem's monotime;
-- else os.time (whole seconds).
local now
do
  local ok, clock = pcall(require, "pgqlua.clock")
  if ok and type(clock) == "function" then
    now = clock
  else
    local sok, system = pcall(require, "system")
    now = sok and type(system) == "table" and system.monotime or os.time
  end
end

-- The string metatable: the process's own (restored whenever the runner
-- gets control back), and the runner's private copy for its code called
-- from a script (db methods, host functions), out of the script's reach.
local STRING_MT = dgetmetatable("")
local RUNNER_STRING_MT = {}
for k, v in pairs(STRING_MT) do RUNNER_STRING_MT[k] = v end
RUNNER_STRING_MT.__metatable = false

-- `local _ <close> = runner_side()` at the top of a runner function a
-- script calls: the runner's string metatable until it returns or raises,
-- then the caller's again.  (An error inside a coroutine the script never
-- closes leaves the runner's; Consumer:_call resets it.)
local saved_mt, n_saved = {}, 0
local RESTORE_MT = setmetatable({}, { __close = function()
  if n_saved > 0 then
    dsetmetatable("", saved_mt[n_saved])
    saved_mt[n_saved] = nil
    n_saved = n_saved - 1
  end
end })
local function runner_side()
  n_saved = n_saved + 1
  saved_mt[n_saved] = dgetmetatable("")
  dsetmetatable("", RUNNER_STRING_MT)
  return RESTORE_MT
end

-- lua/ of this installation: the folder above this file's pgqlua/
local function lua_dir()
  local src = debug.getinfo(1, "S").source
  local dir = src:sub(1, 1) == "@" and src:sub(2):match("^(.*)/pgqlua/[^/]*$")
  return os.getenv("PGQLUA_LUA_DIR") or dir or "lua"
end

local function fold(s)
  return (s:gsub("[\r\n]", " "))
end

local function clip(s, n)
  if #s > n then return s:sub(1, n) end
  return s
end

-- the type name luaL_typeerror uses: __name of the raw metatable, else type()
local function type_name(v)
  local mt = debug.getmetatable(v)
  if type(mt) == "table" and type(rawget(mt, "__name")) == "string" then
    return rawget(mt, "__name")
  end
  return type(v)
end

-- a deep copy for the script: testing.null becomes the script's pgq.null
local function copy(t, null, seen)
  if rawequal(t, M.null) then return null end
  if type(t) ~= "table" or rawequal(t, null) then return t end
  seen = seen or {}
  if seen[t] then return seen[t] end
  local c = {}
  seen[t] = c
  for k, v in pairs(t) do c[copy(k, null, seen)] = copy(v, null, seen) end
  return setmetatable(c, getmetatable(t))
end

---------------------------------------------------------------------------
-- Events

local EVENT_FIELDS = {
  id = "integer", txid = "integer", retry = "integer", time = "text",
  type = "text", data = "text", extra1 = "text", extra2 = "text", extra3 = "text", extra4 = "text",
}

--- An event as process_event sees it.  Every field may be given; the rest
-- default to: time now (UTC, PgQ's text form), retry 0, type "event",
-- data "", extra1..extra4 pgq.null; id (and txid, 1000 + id) are left to
-- the run, which numbers events 1, 2, 3... per consumer.
-- Text fields take strings or pgq.null; numbers are turned into strings.
function M.event(fields)
  fields = fields or {}
  if type(fields) ~= "table" then error("testing.event: expected a table of event fields", 2) end
  local ev = {}
  for k, v in pairs(fields) do
    local kind = EVENT_FIELDS[k]
    if not kind then
      error(string.format("testing.event: unknown field '%s' (events have id, txid, time, retry,"
        .. " type, data, extra1..extra4)", tostring(k)), 2)
    end
    if kind == "integer" then
      if math.type(v) ~= "integer" and not (math.type(v) == "float" and v == math.floor(v)) then
        error(string.format("testing.event: %s must be an integer, not %s", k, tostring(v)), 2)
      end
      v = math.tointeger(v)
    elseif type(v) == "number" then
      v = tostring(v)
    elseif type(v) ~= "string" and v ~= M.null then
      error(string.format("testing.event: %s must be a string or pgq.null, not a %s", k, type(v)), 2)
    end
    ev[k] = v
  end
  if ev.time == nil then ev.time = os.date("!%Y-%m-%d %H:%M:%S+00") end
  if ev.retry == nil then ev.retry = 0 end
  if ev.type == nil then ev.type = "event" end
  if ev.data == nil then ev.data = "" end
  for i = 1, 4 do
    if ev["extra" .. i] == nil then ev["extra" .. i] = M.null end
  end
  return ev
end

local OPS = {
  I = "I", U = "U", D = "D", INSERT = "I", UPDATE = "U", DELETE = "D",
  insert = "I", update = "U", delete = "D",
}
local JSON_OPS = { I = "INSERT", U = "UPDATE", D = "DELETE" }

-- options of the trigger builders, and the event fields they pass on
local function trigger_args(name, t)
  if type(t) ~= "table" then error("testing." .. name .. ": expected a table", 3) end
  local op = OPS[t.op or "I"]
  if not op then
    error(string.format("testing.%s: op must be I, U or D (or insert, update, delete), not %s",
      name, tostring(t.op)), 3)
  end
  local tbl = t.table or "public.test"
  if type(tbl) ~= "string" then error("testing." .. name .. ": table must be a string", 3) end
  if not tbl:find(".", 1, true) then tbl = "public." .. tbl end
  local pkey = t.pkey or {}
  if type(pkey) == "string" then
    local cols = {}
    for c in pkey:gmatch("[^,%s]+") do cols[#cols + 1] = c end
    pkey = cols
  end
  local row = t.row or {}
  if type(row) ~= "table" then error("testing." .. name .. ": row must be a table", 3) end
  if t.pkey == nil and row.id ~= nil then pkey = { "id" } end
  -- column order: `columns` if given, else the key columns, then the rest sorted
  local columns = t.columns
  if not columns then
    columns = {}
    local seen = {}
    for _, c in ipairs(pkey) do
      if row[c] ~= nil then columns[#columns + 1] = c; seen[c] = true end
    end
    local rest = {}
    for k in pairs(row) do
      if type(k) ~= "string" then error("testing." .. name .. ": row keys must be column names", 3) end
      if not seen[k] then rest[#rest + 1] = k end
    end
    table.sort(rest)
    for _, c in ipairs(rest) do columns[#columns + 1] = c end
  end
  local fields = {}
  for k, v in pairs(t) do
    if EVENT_FIELDS[k] then
      fields[k] = v
    elseif k ~= "op" and k ~= "table" and k ~= "pkey" and k ~= "row" and k ~= "columns" then
      error(string.format("testing.%s: unknown option '%s' (op, table, pkey, row, columns,"
        .. " or an event field)", name, tostring(k)), 3)
    end
  end
  return op, tbl, pkey, row, columns, fields
end

-- PostgreSQL's text form of a value
local function pg_text(v)
  if v == true then return "t" elseif v == false then return "f" end
  return tostring(v)
end

local function urlencode(s)
  return (s:gsub("[^%w%-_%.]", function(c)
    if c == " " then return "+" end
    return string.format("%%%02x", c:byte())
  end))
end

--- A row event as pgq.logutriga makes it: ev.type "I:id" (op, then the
-- primary key columns), ev.extra1 the schema-qualified table, ev.data the
-- row urlencoded ("id=1&name=Ann&note": pgq.null is a key without "=").
--   testing.logutriga{ op = "U", table = "public.customer", pkey = "id",
--                      row = { id = 1, name = "Ann", note = pgq.null } }
-- op: I, U or D (default I); table defaults to public.test, a table
-- without a schema gets public.; pkey: "id" or {"a", "b"} (default "id"
-- when the row has an id); booleans become t/f as in PostgreSQL; columns:
-- their order (default: key columns, then the others sorted).  Any event
-- field (id, retry, time, ...) may be given too.
function M.logutriga(t)
  local op, tbl, pkey, row, columns, fields = trigger_args("logutriga", t)
  local parts = {}
  for _, c in ipairs(columns) do
    local v = row[c]
    if v == M.null then
      parts[#parts + 1] = urlencode(c)
    elseif v ~= nil then
      parts[#parts + 1] = urlencode(c) .. "=" .. urlencode(pg_text(v))
    end
  end
  fields.type = op .. ":" .. table.concat(pkey, ",")
  fields.data = table.concat(parts, "&")
  fields.extra1 = tbl
  return M.event(fields)
end

--- A row event as pgq.jsontriga makes it: ev.type
-- {"op":"INSERT","table":["public","t"],"pkey":["id"]}, ev.extra1 the
-- schema-qualified table, ev.data the row as a JSON object.  Options as for
-- testing.logutriga.  Like the real trigger, integers are JSON numbers,
-- booleans true/false, pgq.null null, and floats strings (PostgreSQL sends
-- numeric and float columns as strings: give "1.50" to be exact).
function M.jsontriga(t)
  local op, tbl, pkey, row, columns, fields = trigger_args("jsontriga", t)
  local parts = {}
  for _, c in ipairs(columns) do
    local v = row[c]
    if v ~= nil then
      local enc
      if v == M.null then
        enc = "null"
      elseif math.type(v) == "float" then
        enc = json.encode(tostring(v))
      else
        enc = json.encode(v)
      end
      parts[#parts + 1] = json.encode(c) .. ":" .. enc
    end
  end
  local schema, name = tbl:match("^([^.]*)%.(.*)$")
  local keys = {}
  for i, c in ipairs(pkey) do keys[i] = json.encode(c) end
  fields.type = string.format('{"op":"%s","table":[%s,%s],"pkey":[%s]}', JSON_OPS[op],
    json.encode(schema), json.encode(name), table.concat(keys, ","))
  fields.data = "{" .. table.concat(parts, ",") .. "}"
  fields.extra1 = tbl
  return M.event(fields)
end

---------------------------------------------------------------------------
-- db:exec answers and SQL records

--- An answer that makes db:exec fail like a server error:
-- testing.sql_error("23505", 'duplicate key value violates unique constraint "t_pkey"')
-- raises "db:exec: 23505 duplicate key ..." in the script.
function M.sql_error(sqlstate, message)
  if message == nil then sqlstate, message = nil, sqlstate end
  local text = (sqlstate and sqlstate .. " " or "") .. tostring(message or "error")
  return { error = text }
end

--- The text db:exec sends for a parameter (pgqlua.rules.param_text), or
-- nil for SQL NULL; raises the runtime's error for a value it refuses.
function M.param_text(v, n, verb)
  local text, err = rules.param_text(v, n, verb or "exec", M.null)
  if text == false then error(err, 0) end
  return text
end

--- The runtime's trace line for a statement, without the "db:exec " head
-- (ldb.c log_sql): `<sql> [<params as %q, NULL for SQL NULL>]`, one line.
function M.trace_text(sql, params, n)
  local parts = {}
  for i = 1, n or #params do
    local p = params[i]
    parts[i] = (p == nil or p == M.null) and "NULL" or string.format("%q", p)
  end
  return fold(clip("db:exec " .. sql .. " [" .. table.concat(parts, ", ") .. "]", LOG_MAX)):sub(9)
end

-- whitespace runs to one space, trimmed: SQL compares by its words
local function squash(s)
  return (s:gsub("%s+", " "):gsub("^ ", ""):gsub(" $", ""))
end

local function sql_matches(sql, want)
  if squash(sql) == squash(want) or sql:find(want, 1, true) then return true end
  local ok, found = pcall(string.find, sql, want)
  return ok and found ~= nil
end

local function normalise_answer(a)
  if type(a) == "function" then return a end
  if a == nil then return { rows = {}, count = 0 } end
  if type(a) ~= "table" then error("testing: an answer is a rows table, {rows=, count=}, an error or a function", 3) end
  if a.rows ~= nil or a.count ~= nil or a.error ~= nil then
    return { rows = a.rows or {}, count = a.count, error = a.error }
  end
  return { rows = a, count = nil }
end

---------------------------------------------------------------------------
-- The consumer: a loaded script

local Consumer = {}
Consumer.__index = Consumer

-- the message handler of lbridge.c docall: message text and traceback.
-- It runs where the error was raised; an error object's __tostring runs
-- with the script's string metatable, the rest with the runner's.
local function msgh_for(consumer)
  return function(e)
    dsetmetatable("", RUNNER_STRING_MT)
    local msg
    if type(e) == "string" or type(e) == "number" then
      msg = tostring(e)
    else
      local mt = dgetmetatable(e)
      local ts = type(mt) == "table" and rawget(mt, "__tostring")
      local ok, s = false, nil
      if ts then
        dsetmetatable("", consumer.string_mt)
        ok, s = pcall(ts, e)
        dsetmetatable("", RUNNER_STRING_MT)
      end
      if ok and type(s) == "string" then
        msg = s
      else
        msg = "(error object is a " .. type(e) .. " value)"
      end
    end
    local tb = traceback(msg, 2)
    -- the frames of the runner itself are no help to the script's author
    local cut = sfind(tb, "\n\t%[C%]: in function 'xpcall'")
    return cut and ssub(tb, 1, cut - 1) or tb
  end
end

-- the error text the runtime keeps: first part, newlines folded, clipped
local function error_text(full)
  local tb = full:find(TRACEBACK_MARK, 1, true)
  local first = tb and full:sub(1, tb - 1) or full
  return fold(clip(first, MSG_MAX)), full
end

-- The deadline hook, in the runner's thread and every coroutine of the
-- script: wall-clock, as lbridge.c's deadline_hook.
local function deadline_hook_for(consumer)
  local own = getinfo(1, "S").source
  local hook
  hook = function()
    local deadline = consumer._deadline
    if not deadline then return end
    -- fire in the script's code only, never in the runner's own (the
    -- message handler, the code after xpcall)
    local info = getinfo(2, "S")
    if info and info.source == own then return end
    if now() > deadline then
      -- fire again at once if a pcall in the script swallows this
      sethook(hook, "", 1)
      if consumer._thread then sethook(consumer._thread, hook, "", 1) end
      -- as luaL_error in lbridge.c's C hook: the position of the caller
      -- of the interrupted function (none when that is the runner)
      error(sformat("event_timeout exceeded: the script ran for more than %.3g seconds", consumer._timeout), 3)
    end
  end
  return hook
end

-- run f(...) as docall does, with the script's string metatable and a
-- deadline of `timeout` seconds (0: none); returns true, results
-- (packed) or false, message, traceback
function Consumer:_call(timeout, f, ...)
  timeout = tonumber(timeout) or 0
  self._thread = co_running()
  if timeout > 0 then
    self._timeout, self._deadline = timeout, now() + timeout
  end
  if timeout > 0 then sethook(self._deadline_hook, "", HOOK_COUNT) end
  n_saved = 0
  dsetmetatable("", self.string_mt)
  local res = table.pack(xpcall(f, self._msgh, ...))
  dsetmetatable("", STRING_MT)
  for i = 1, n_saved do saved_mt[i] = nil end
  n_saved = 0
  if timeout > 0 then sethook() end
  self._deadline, self._thread = nil, nil
  if res[1] then return true, table.pack(table.unpack(res, 2, res.n)) end
  local msg, tb = error_text(res[2])
  return false, msg, tb
end

-- The script's coroutine library: its own table, and coroutines that
-- carry the deadline hook (debug.sethook's hooks are per thread).
local function new_coroutine_lib(consumer)
  local lib = {}
  for k, v in pairs(coroutine) do lib[k] = v end
  local function check(name, f)
    if type(f) ~= "function" then
      error(sformat("bad argument #1 to '%s' (function expected, got %s)", name,
        f == nil and "no value" or type(f)), 3)
    end
  end
  function lib.create(f)
    check("create", f)
    local co = co_create(f)
    sethook(co, consumer._deadline_hook, "", HOOK_COUNT)
    return co
  end
  -- as lcorolib.c auxwrap: an error gets the caller's position
  function lib.wrap(f)
    check("wrap", f)
    local co = co_create(f)
    sethook(co, consumer._deadline_hook, "", HOOK_COUNT)
    return function(...)
      local r = table.pack(co_resume(co, ...))
      if r[1] then return table.unpack(r, 2, r.n) end
      local e = r[2]
      if co_status(co) == "dead" then
        local ok, ce = co_close(co)
        if not ok then e = ce end
      end
      if type(e) == "string" then error(e, 2) end
      error(e, 0)
    end
  end
  return lib
end

local function new_host(consumer)
  local host = { name = "mock" }
  function host.log(level, message)
    local _ <close> = runner_side()
    local where = "?"
    local info = debug.getinfo(3, "Sl")
    if info then where = info.short_src .. ":" .. tostring(info.currentline) end
    local names = { [0] = "error", "warn", "info", "debug" }
    local entry = { level = names[level] or tostring(level), message = message, where = where }
    local sink = consumer._logs or consumer.load_logs
    sink[#sink + 1] = entry
  end
  function host.loadfile(path)
    local _ <close> = runner_side()
    return loadfile(path, "t", consumer.env)
  end
  -- pgq.http: the context lhttp.c gives (Idempotency-Key, http_timeout)
  -- and the transport, answered from consumer:answer_http
  function host.http_context()
    local _ <close> = runner_side()
    local c, ctx = consumer.config, {}
    ctx.timeout = tonumber(c.http_timeout) or 30
    if consumer._ev_id and c.http_idempotency_key ~= false then
      ctx.key = sformat("%s/%s/%d", c.queue_name, c.consumer_name, consumer._ev_id)
    end
    return ctx
  end
  function host.http_request(prep)
    local _ <close> = runner_side()
    return consumer:_http(prep)
  end
  -- pgq.http.send: answered at once, folded into the event at its end
  function host.http_send(prep, on_response)
    local _ <close> = runner_side()
    if not consumer._ev_id then
      error("pgq.http.send: only inside process_event (use pgq.http.request in the hooks)", 0)
    end
    local res, err = consumer:_http(prep, true)
    local sends = consumer._sends
    sends[#sends + 1] = { prep, on_response, res, err }
  end
  -- pgq.mail: the context lmail.c gives (smtp_url without its secrets,
  -- http_timeout) and the transport, answered from consumer:answer_mail
  function host.mail_context()
    local _ <close> = runner_side()
    local c = consumer.config
    return { url = c.smtp_url and mail.safe_url(c.smtp_url), timeout = tonumber(c.http_timeout) or 30 }
  end
  function host.mail_send(prep)
    local _ <close> = runner_side()
    return consumer:_mail(prep)
  end
  return host
end

-- the db handle: a table standing in for the runtime's userdata; its
-- state is kept here, out of the script's reach
local DB_METHODS = {}
local DB_STATE = setmetatable({}, { __mode = "k" })
local DB_MT = {
  __index = DB_METHODS,
  __tostring = function(db)
    local _ <close> = runner_side()
    return DB_STATE[db].active and "pgqlua.db (open)" or "pgqlua.db (outside a batch)"
  end,
  __metatable = "db",
  __name = "pgqlua.db",
}

-- ldb.c is_transaction_control: the first word after blanks and comments
local TXN_WORDS = { begin = true, start = true, commit = true, ["end"] = true, rollback = true,
                    abort = true, savepoint = true, release = true }
local TXN_REFUSED = rules.TXN_REFUSED

local function skip_blank(sql, i)
  while true do
    i = sql:match("^[ \t\n\r\f]*()", i)
    if sql:sub(i, i + 1) == "--" then
      i = (sql:find("\n", i, true) or #sql + 1)
    elseif sql:sub(i, i + 1) == "/*" then
      local e = sql:find("*/", i + 2, true)
      i = e and e + 2 or #sql + 1
    else
      return i
    end
  end
end

function M.is_transaction_control(sql)
  local word, after = sql:match("^([%a_]*)()", skip_blank(sql, 1))
  word = word:lower()
  if TXN_WORDS[word] then return true end
  return word == "prepare" and sql:match("^[%a_]*", skip_blank(sql, after)):lower() == "transaction"
end

-- the checks db:exec and db:send share (ldb.c take_statement); returns
-- the state and the statement, not yet recorded: a statement is recorded
-- when the runtime would trace it
local function take_statement(self, verb, ...)
  local st = type(self) == "table" and DB_STATE[self]
  if not st then
    error(string.format("bad argument #1 to '%s' (pgqlua.db expected, got %s)", verb,
      select("#", self) == 0 and "no value" or type_name(self)), 3)
  end
  if not st.active then
    error("db handle used outside its batch (it is valid only inside process_event and the batch hooks)", 3)
  end
  local nargs = select("#", ...)
  local sql = ...
  if math.type(sql) then
    sql = tostring(sql)
  elseif type(sql) ~= "string" then
    error(string.format("bad argument #1 to '%s' (string expected, got %s)", verb,
      nargs == 0 and "no value" or type_name(sql)), 3)
  end
  local values = table.pack(select(2, ...))
  local params = {}
  for i = 1, values.n do
    local text, err = rules.param_text(values[i], i, verb, st.consumer.null)
    if text == false then error(err, 3) end
    params[i] = text == nil and M.null or text
  end
  if st.sql_failed then
    error(string.format("db:%s: an earlier statement of this event failed (%s); the event's writes will be"
      .. " rolled back", verb, st.sql_error), 3)
  end
  local stmt = { sql = sql, params = params, n = values.n, values = values }
  if verb == "send" then stmt.sent = true end
  if M.is_transaction_control(sql) then
    st.sql_failed, st.sql_error = true, "db:" .. verb .. ": " .. TXN_REFUSED
    error(st.sql_error, 3)
  end
  return st, stmt
end

function DB_METHODS.exec(self, ...)
  local _ <close> = runner_side()
  local st, stmt = take_statement(self, "exec", ...)
  -- the runtime waits for the event's sends first: a failed one shows here
  if st.send_failed then
    st.sql_failed, st.sql_error = true, st.send_error
    error(string.format("db:exec: an earlier statement of this event failed (%s); the event's writes will be"
      .. " rolled back", st.sql_error), 2)
  end
  st.consumer:_record(stmt)
  local sql = stmt.sql
  local head = sql:match("^%s*(%a+)")
  if head and head:lower() == "copy" then
    stmt.error = rules.COPY_REFUSED
    st.sql_failed, st.sql_error = true, stmt.error
    error("db:exec: " .. stmt.error, 2)
  end
  local rows, count = st.consumer:_answer(sql, stmt.values)
  if rows == nil then
    stmt.error = count
    st.sql_failed, st.sql_error = true, count
    error("db:exec: " .. count, 2)
  end
  stmt.rows, stmt.count = rows, count
  return copy(rows, st.consumer.null), count
end

--- db:send: recorded like db:exec; nothing is returned.  An error answer
-- does not raise here: as in the runtime, it makes the event an error
-- ("db:send: ...") when it ends, or raises at the event's next db:exec.
function DB_METHODS.send(self, ...)
  local _ <close> = runner_side()
  local st, stmt = take_statement(self, "send", ...)
  st.consumer:_record(stmt)
  local head = stmt.sql:match("^%s*(%a+)")
  local rows, count
  if head and head:lower() == "copy" then
    rows, count = nil, rules.COPY_REFUSED
  else
    rows, count = st.consumer:_answer(stmt.sql, stmt.values)
  end
  if rows == nil then
    stmt.error = count
    if not st.send_failed then st.send_failed, st.send_error = true, "db:send: " .. count end
  else
    stmt.count = count
  end
end

--- Load a consumer script as the runtime does (top level, then init(config)).
-- opts.config: what init sees and the rules use (merged over
-- testing.DEFAULT_CONFIG: max_retries, retry_delay, event_timeout, ...);
-- opts.answers: a list of { match = "sql pattern", rows = {...}, count = n }
-- or { match = ..., error = "..." } (see Consumer:answer); opts.env:
-- environment variables for os.getenv ({ NAME = "value" }, over the
-- process's; env_allow in the config still decides what the script reads).
-- Raises the runtime's load error (file:line) if the script does not load.
function M.load(script, opts)
  opts = opts or {}
  if type(script) ~= "string" then error("testing.load: expected the script's path", 2) end
  local self = setmetatable({ script = script, answers = {}, http_answers = {}, mail_answers = {}, load_logs = {},
                              batches = 0 },
    Consumer)
  local config = {}
  for k, v in pairs(M.DEFAULT_CONFIG) do config[k] = v end
  for k, v in pairs(opts.config or {}) do config[k] = v end
  config.script = script
  self.config = config
  for _, a in ipairs(opts.answers or {}) do
    if a.once then
      self:answer_once(a.match, a)
    else
      self:answer(a.match, a)
    end
  end
  for _, a in ipairs(opts.http_answers or {}) do
    if a.once then
      self:answer_http_once(a.match, a)
    else
      self:answer_http(a.match, a)
    end
  end
  for _, a in ipairs(opts.mail_answers or {}) do
    if a.once then
      self:answer_mail_once(a.match, a)
    else
      self:answer_mail(a.match, a)
    end
  end

  local ldir = lua_dir()
  local sdir = script:match("^(.*)/[^/]*$") or "."
  if sdir == "" then sdir = "/" end
  local path = table.concat({
    ldir .. "/?.lua", ldir .. "/?/init.lua", sdir .. "/?.lua", sdir .. "/?/init.lua",
    "/usr/local/share/lua/5.4/?.lua", "/usr/local/share/lua/5.4/?/init.lua",
    "/usr/share/lua/5.4/?.lua", "/usr/share/lua/5.4/?/init.lua",
  }, ";")
  -- the script's own copies of the libraries and of the string
  -- metatable; its own pgq, pgq.null and payload decoders (loaded from
  -- lua/ into its environment, as the runtime loads them into its state)
  local libs = {}
  for k, v in pairs(_G) do libs[k] = v end
  for _, name in ipairs({ "string", "table", "math", "utf8", "os" }) do
    local lib = {}
    for k, v in pairs(_G[name]) do lib[k] = v end
    libs[name] = lib
  end
  -- os.getenv reads only config.env_allow, as in the runtime
  local allow = self.config.env_allow
  if type(allow) == "string" then
    local list = {}
    for name in allow:gmatch("[^,%s]+") do list[#list + 1] = name end
    allow = list
  end
  -- opts.env: variables the script's environment has besides the
  -- process's (still only those env_allow lists)
  local given = opts.env or {}
  libs.os.getenv = sandbox.make_getenv(function(name)
    if given[name] ~= nil then return given[name] end
    return os.getenv(name)
  end, allow)
  self._deadline_hook = deadline_hook_for(self)
  self._msgh = msgh_for(self)
  libs.coroutine = new_coroutine_lib(self)
  self.string_mt = {}
  for k, v in pairs(STRING_MT) do self.string_mt[k] = v end
  self.string_mt.__index = libs.string
  local host = new_host(self)
  local modules = self.config.lua_modules
  if type(modules) == "string" then
    local list = {}
    for name in modules:gmatch("[^,%s]+") do list[#list + 1] = name end
    modules = list
  end
  local env = sandbox.new_env(libs, path, host, modules)
  self.env = env
  env.package.preload["pgqlua.host"] = function() return host end

  local state = { consumer = self, active = false }
  self.db = setmetatable({}, DB_MT)
  DB_STATE[self.db] = state
  self._db_state = state

  -- as lbridge.c load_tramp, one rules.load_timeout for all of it
  local started, limit = now(), rules.load_timeout(self.config)
  local function step(f, ...)
    local left = math.max(limit - (now() - started), 1e-6)
    local ok, res = self:_call(left, f, ...)
    if not ok then error(res, 0) end
    return table.unpack(res, 1, res.n)
  end
  env.pgq = step(env.require, "pgqlua")
  self.pgq, self.null = env.pgq, env.pgq.null
  local chunk, lerr = loadfile(script, "t", env)
  if not chunk then error(fold(clip(lerr, MSG_MAX)), 0) end
  step(chunk)
  for _, name in ipairs({ "process_event", "init", "on_batch_start", "on_batch_end" }) do
    local f = env[name]
    if f == nil and name == "process_event" then
      error(string.format("%s: process_event is not defined (the script must define function"
        .. " process_event(ev, db))", script), 0)
    elseif f ~= nil and type(f) ~= "function" then
      error(string.format("%s: %s must be a function, not a %s", script, name, type(f)), 0)
    end
    self[name] = f
  end
  if self.init then
    local c = {}
    for _, k in ipairs({ "queue_name", "consumer_name", "script", "config_file", "retry_delay",
                         "max_retries", "fetch_size", "loop_delay" }) do
      c[k] = config[k]
    end
    c.retry_delay = c.retry_delay + 0.0
    c.loop_delay = c.loop_delay + 0.0
    step(self.init, c)
  end
  return self
end

--- Answer every db:exec whose SQL matches `match` (the same SQL give or take
-- whitespace, a plain substring, or a Lua pattern; nil matches any).
-- `answer` is an array of rows ({ { id = 1 } }), { rows = ..., count = n },
-- testing.sql_error(...), or function(sql, p1, p2, ...) returning one of
-- those (or rows, count).  Later answers win over earlier ones.
function Consumer:answer(match, answer)
  table.insert(self.answers, 1, { match = match, answer = normalise_answer(answer) })
  return self
end

--- As answer, but used for one statement only; one-shot answers are used in
-- the order they were given, before the standing ones.  With a nil match:
-- "the next statement, whatever it is" (answers in order).
function Consumer:answer_once(match, answer)
  local n = 0
  for _, a in ipairs(self.answers) do if a.once then n = n + 1 end end
  table.insert(self.answers, n + 1, { match = match, answer = normalise_answer(answer), once = true })
  return self
end

--- Answers in order: consumer:answer_next(a1, a2, ...) answers the next
-- statements, whatever their SQL, one each.
function Consumer:answer_next(...)
  for i = 1, select("#", ...) do self:answer_once(nil, (select(i, ...))) end
  return self
end

function Consumer:_answer(sql, values)
  for i, a in ipairs(self.answers) do
    if a.match == nil or sql_matches(sql, a.match) then
      if a.once then table.remove(self.answers, i) end
      local ans = a.answer
      if type(ans) == "function" then
        local rows, count = ans(sql, table.unpack(values, 1, values.n))
        if type(rows) == "table" and (rows.rows ~= nil or rows.error ~= nil or rows.count ~= nil) then
          ans = normalise_answer(rows)
        else
          ans = { rows = rows or {}, count = count }
        end
      end
      if ans.error then return nil, ans.error end
      return ans.rows, ans.count or #ans.rows
    end
  end
  return {}, 0
end

--- An answer that makes pgq.http.request fail like a transport error:
-- kind is "timeout", "connect", "resolve", "reset", "tls" or
-- "body_limit" (the reason libcurl gives, see pgqlua.http.ERRORS), or any
-- other text, taken as the reason itself.
function M.http_error(kind)
  return { http_error = kind }
end

local function normalise_http_answer(a)
  local t = type(a)
  if t == "function" then return a end
  if t ~= "table" then
    error("testing: an HTTP answer is {status =, headers =, body =}, testing.http_error(...) or a function", 3)
  end
  if a.http_error ~= nil or a.error ~= nil then return { http_error = a.http_error or a.error } end
  return http.response(math.tointeger(a.status) or 200, a.headers, a.body)
end

local function url_matches(url, match)
  if match == nil then return true end
  if sfind(url, match, 1, true) then return true end
  local ok, found = pcall(sfind, url, match)
  return ok and found ~= nil
end

--- Answer every pgq.http request whose URL matches `match` (a substring
-- or a Lua pattern; "METHOD url" matches the method too; nil matches
-- any) with `answer`: { status =, headers =, body = },
-- testing.http_error("timeout"), or function(req) returning one of those
-- (req: method, url, headers, body, timeout, follow).  Later answers win;
-- a request nothing answers gets 200 with an empty body.
function Consumer:answer_http(match, answer)
  local n = 0
  for _, a in ipairs(self.http_answers) do if a.once then n = n + 1 end end
  table.insert(self.http_answers, n + 1, { match = match, answer = normalise_http_answer(answer) })
  return self
end

--- As answer_http, for one request only (one-shot answers first, in order).
function Consumer:answer_http_once(match, answer)
  local n = 0
  for _, a in ipairs(self.http_answers) do if a.once then n = n + 1 end end
  table.insert(self.http_answers, n + 1, { match = match, answer = normalise_http_answer(answer), once = true })
  return self
end

local function http_answer_matches(a, prep)
  local m = a.match
  if m == nil then return true end
  local method, rest = m:match("^(%u+) (.+)$")
  if method then return method == prep.method and url_matches(prep.url, rest) end
  return url_matches(prep.url, m)
end

-- the mock transport: record the request, answer it
function Consumer:_http(prep, sent)
  local rec = { method = prep.method, url = prep.url, headers = prep.headers, body = prep.body,
                timeout = prep.timeout, follow = prep.follow, where = self._where, sent = sent }
  local sink = self._http_sink
  if sink then sink[#sink + 1] = rec end
  local ans = { status = 200, headers = {}, body = "" }
  for i, a in ipairs(self.http_answers) do
    if http_answer_matches(a, prep) then
      if a.once then table.remove(self.http_answers, i) end
      ans = a.answer
      if type(ans) == "function" then
        local req = { method = prep.method, url = prep.url, headers = prep.headers, body = prep.body,
                      timeout = prep.timeout, follow = prep.follow }
        ans = normalise_http_answer(ans(req) or {})
      end
      break
    end
  end
  if ans.http_error then
    local reason = http.reason(ans.http_error, prep, self.config.http_max_body)
    rec.error = reason
    return nil, reason
  end
  local res = http.response(ans.status, ans.headers, ans.body)
  rec.status = res.status
  return res
end

--- An answer that makes pgq.mail.send fail: a server's refusal ("550
-- 5.1.1 no such user", worded as a refused recipient) or a transport
-- error kind as for testing.http_error ("timeout", "connect", ...).
function M.mail_error(reply)
  return { mail_error = reply }
end

local function normalise_mail_answer(a)
  local t = type(a)
  if t == "function" or a == true then return a end
  if t ~= "table" then
    error("testing: a mail answer is true, {}, testing.mail_error(...) or a function", 3)
  end
  if a.mail_error ~= nil or a.error ~= nil then return { mail_error = a.mail_error or a.error } end
  return true
end

local function add_mail_answer(list, entry)
  local n = 0
  for _, a in ipairs(list) do if a.once then n = n + 1 end end
  table.insert(list, n + 1, entry)
end

--- Answer every pgq.mail.send one of whose recipients (to, cc, bcc)
-- matches `match` (a substring or a Lua pattern; nil matches any) with
-- `answer`: true or {} (accepted), testing.mail_error("550 ..."), or
-- function(mail) returning one of those (mail: from, to, cc, bcc,
-- subject, text, html, headers, data).  Later answers win; a mail nothing
-- answers is accepted.
function Consumer:answer_mail(match, answer)
  add_mail_answer(self.mail_answers, { match = match, answer = normalise_mail_answer(answer) })
  return self
end

--- As answer_mail, for one mail only (one-shot answers first, in order).
function Consumer:answer_mail_once(match, answer)
  add_mail_answer(self.mail_answers, { match = match, answer = normalise_mail_answer(answer), once = true })
  return self
end

-- the mock SMTP transport: record the mail, answer it
function Consumer:_mail(prep)
  local rec = { from = prep.from, to = prep.to, cc = prep.cc, bcc = prep.bcc, subject = prep.subject,
                text = prep.text, html = prep.html, headers = prep.headers, data = prep.data, where = self._where }
  local sink = self._mail_sink
  if sink then sink[#sink + 1] = rec end
  local ans = true
  for i, a in ipairs(self.mail_answers) do
    if mail.matches(rec, a.match) then
      if a.once then table.remove(self.mail_answers, i) end
      ans = a.answer
      if type(ans) == "function" then
        local m = {}
        for k, v in pairs(rec) do if k ~= "where" then m[k] = v end end
        ans = normalise_mail_answer(ans(m) or true)
      end
      break
    end
  end
  if type(ans) == "table" and ans.mail_error then
    rec.error = mail.reason(ans.mail_error, prep)
    return nil, rec.error
  end
  rec.sent = true
  return true
end

function Consumer:_record(stmt)
  local sink = self._sql
  stmt.where = self._where
  sink[#sink + 1] = stmt
end

-- the runtime's text for the outcome log line (consumer.c log_outcome)
local function outcome_text(r)
  if r.outcome == "RETRY" then
    return r.delay and string.format("RETRY delay=%g", r.delay) or "RETRY"
  elseif r.outcome == "FAILED" then
    return "FAILED reason=" .. r.reason
  elseif r.outcome == "ERROR" then
    return "ERROR error=" .. r.error
  end
  return r.outcome or "not run"
end
M.outcome_text = outcome_text

-- begin capturing SQL and logs for one call
function Consumer:_begin(where, rec)
  rec.sql, rec.logs, rec.http, rec.mails = {}, {}, {}, {}
  self._sql, self._logs, self._where, self._http_sink = rec.sql, rec.logs, where, rec.http
  self._mail_sink = rec.mails
  self._sends = {}
  local st = self._db_state
  st.active, st.sql_failed, st.sql_error = true, false, nil
  st.send_failed, st.send_error = false, nil
end

function Consumer:_end()
  local st = self._db_state
  st.active = false
  self._sql, self._logs, self._where, self._http_sink, self._ev_id = nil, nil, nil, nil, nil
  self._mail_sink = nil
  if st.send_failed and not st.sql_failed then
    return true, st.send_error, true
  end
  return st.sql_failed, st.sql_error, st.sql_failed and st.sql_error:find("^db:send: ") ~= nil
end

--- The batch table the hooks see; fields may be given.
function Consumer:batch(fields)
  self.batches = self.batches + 1
  local stamp = os.date("!%Y-%m-%d %H:%M:%S+00")
  local b = { id = self.batches, tick_id = self.batches + 1, prev_tick_id = self.batches,
              tick_time = stamp, prev_tick_time = stamp }
  for k, v in pairs(fields or {}) do b[k] = v end
  return b
end

function Consumer:_hook(name, batch, run)
  local f = self[name]
  if not f then return true end
  local rec = { hook = name }
  run[name] = rec
  self:_begin(name, rec)
  local ok, err, tb = self:_call(self.config.event_timeout, f, batch, self.db)
  local sql_failed, sql_error, by_send = self:_end()
  for _, s in ipairs(rec.sql) do run.sql[#run.sql + 1] = s end
  for _, l in ipairs(rec.logs) do run.logs[#run.logs + 1] = l end
  for _, h in ipairs(rec.http) do run.http[#run.http + 1] = h end
  for _, m in ipairs(rec.mails) do run.mails[#run.mails + 1] = m end
  if ok and sql_failed then
    ok, err = false, by_send and sql_error or "the hook went on after an SQL error: " .. sql_error
  end
  if not ok then
    rec.error, rec.traceback = err, tb
    run.aborted = name .. " failed"
    run.error = name .. ": " .. err
    return false
  end
  return true
end

--- Run one event through process_event, as consumer_handle_event does.
-- Returns its result record (see Consumer:run).
function Consumer:event(ev)
  return self:run({ ev })[1]
end

--- Run a batch: on_batch_start, process_event for each event, on_batch_end.
-- events: event tables (testing.event fields; missing ones get defaults).
-- opts.batch: fields of the batch table the hooks see.
-- Returns a run: run[i] (also run.events[i]) is the result of event i:
--   outcome    "OK", "RETRY", "FAILED", "ABORT_BATCH", "ERROR", or nil when
--              the event was not run (after an ABORT_BATCH or a failed hook)
--   delay      RETRY: the delay the script returned (nil: none given)
--   reason     FAILED: the reason ("failed by the script" when none);
--              RETRY: why, when a pgq.http.send gave the RETRY (the runtime
--              logs it with the retry and keeps it at max_retries)
--   error      ERROR: the runtime's error text (file:line: message);
--              traceback: the full one
--   action     what the runtime does next: "done", "retry" (retry_in:
--              seconds), "failed" (failed: the reason kept in
--              pgqlua.failed_event), "abort" (the whole batch rolls back),
--              "skipped" (not run)
--   sql        the statements it ran: { sql =, params = {text or
--              pgq.null...}, n =, values = the Lua values given, rows =,
--              count = or error = }
--   kept       whether its writes are kept (only OK events' writes are)
--   logs       its pgq.log calls: { level =, message =, where = "file:line" }
--   ev         the event as the script got it
-- and run.sql (every statement, hooks included), run.committed (the
-- statements the batch's transaction would commit), run.logs, run.aborted
-- (nil, or why the batch rolls back), run.on_batch_start / run.on_batch_end
-- ({ sql =, logs =, error = }), run.batch.
function Consumer:run(events, opts)
  opts = opts or {}
  if type(events) ~= "table" then error("consumer:run: expected a list of events", 2) end
  local batch = self:batch(opts.batch)
  local run = { events = {}, sql = {}, logs = {}, http = {}, mails = {}, batch = batch, committed = {} }
  local evs = {}
  for i, e in ipairs(events) do
    local ok, ev = pcall(M.event, e)
    if not ok then error(string.format("consumer:run: event %d: %s", i, ev), 2) end
    if ev.id == nil then
      self.last_id = (self.last_id or 0) + 1
      ev.id = self.last_id
    elseif ev.id > (self.last_id or 0) then
      self.last_id = ev.id
    end
    if ev.txid == nil then ev.txid = 1000 + ev.id end
    evs[i] = ev
  end
  local go = self:_hook("on_batch_start", batch, run)
  for i, ev in ipairs(evs) do
    local r = { ev = ev, index = i }
    run.events[i], run[i] = r, r
    if not go then
      r.action, r.sql, r.logs, r.http, r.mails = "skipped", {}, {}, {}, {}
    else
      self:_begin(i, r)
      self._ev_id = ev.id
      local timeout = self.config.event_timeout
      local ok, res, tb = self:_call(timeout, self.process_event, copy(ev, self.null), self.db)
      local outcome, delay, msg
      if ok and not (res[1] == nil or res[1] == rules.EVENT_OK and math.type(res[1]) == "integer") then
        -- as event_tramp: what is not plainly OK goes to the shared rule,
        -- in the script's state (its __tostring, its string metatable)
        local fn = self.process_event
        local function where()
          local info = getinfo(fn, "S")
          return info.short_src .. ":" .. info.linedefined
        end
        ok, res, tb = self:_call(timeout, rules.map_result, where, res[1], res[2])
      elseif ok then
        res = { "OK" }
      end
      if ok then
        outcome, delay, msg = res[1], res[2], res[3]
        if msg ~= nil then msg = clip(msg, MSG_MAX) end
      else
        outcome, msg = "ERROR", res
      end
      local sql_failed, sql_error, by_send = self:_end()
      if outcome == "OK" and sql_failed then
        outcome, msg = "ERROR", clip(by_send and sql_error or "the script went on after an SQL error: " .. sql_error,
          MSG_MAX)
      end
      -- pgq.http.send: the responses decide, as lbridge.c lb_settle_sends
      if #self._sends > 0 and outcome ~= "ABORT_BATCH" then
        local sok, sres = self:_call(timeout, http.settle, outcome, delay, msg, self._sends)
        if sok then
          outcome, delay, msg = sres[1], sres[2], sres[3]
          if msg == "" then msg = nil end
          if msg ~= nil then msg = clip(msg, MSG_MAX) end
        else
          outcome, msg = "ERROR", sres
        end
      end
      r.outcome = outcome
      -- a RETRY may carry a reason (a send's status, on_response): the
      -- runtime logs it with the retry and keeps it at max_retries
      if outcome == "RETRY" then r.delay, r.reason = delay, msg end
      if outcome == "FAILED" then r.reason = msg end
      if outcome == "ERROR" then r.error, r.traceback = msg, tb end
      r.kept = outcome == "OK"
      for _, s in ipairs(r.sql) do run.sql[#run.sql + 1] = s end
      for _, l in ipairs(r.logs) do run.logs[#run.logs + 1] = l end
      for _, h in ipairs(r.http) do run.http[#run.http + 1] = h end
      for _, m in ipairs(r.mails) do run.mails[#run.mails + 1] = m end
      if outcome == "ABORT_BATCH" then
        r.action = "abort"
        run.aborted = "the script returned pgq.ABORT_BATCH at event " .. tostring(ev.id)
        go = false
      elseif outcome == "OK" then
        r.action = "done"
      elseif outcome == "FAILED" then
        r.action, r.failed = "failed", msg
      else
        local max = math.tointeger(self.config.max_retries) or rules.DEFAULTS.max_retries
        local reason = rules.retries_used_up(ev.retry, max, msg or "")
        if reason then
          r.action = "failed"
          r.failed = clip(reason, REASON_MAX)
        else
          r.action = "retry"
          r.retry_in = delay or (tonumber(self.config.retry_delay) + 0.0)
        end
      end
    end
  end
  if go then self:_hook("on_batch_end", batch, run) end
  if not run.aborted then
    for _, s in ipairs(run.sql) do
      local kept = type(s.where) ~= "number" or run.events[s.where].kept
      if kept and not s.error then run.committed[#run.committed + 1] = s end
    end
  end
  return run
end

--- Load a script and run one batch: testing.run(script, events, opts)
-- (opts as for testing.load and consumer:run).
function M.run(script, events, opts)
  return M.load(script, opts):run(events, opts)
end

---------------------------------------------------------------------------
-- Expectations: shared by the busted assertions, `pgqlua test` and the
-- contract tests

local OUTCOMES = { OK = true, RETRY = true, FAILED = true, ABORT_BATCH = true, ERROR = true }

-- "dir/x.lua:3" -> "x.lua:3": error texts compare without folders
local function strip_dirs(s)
  return (s:gsub("[%w_%.%-~/]*/([%w_%.%-]+%.lua:%d+)", "%1"))
end
M.strip_dirs = strip_dirs

local function text_matches(actual, want)
  if actual == nil then return false end
  if actual == want or strip_dirs(actual) == strip_dirs(want) then return true end
  return false
end

local function compare_sql(bad, label, list, sqls)
  local want = M.expected_sql_texts(list)
  local have = {}
  for i, s in ipairs(sqls or {}) do have[i] = M.trace_text(s.sql, s.params, s.n) end
  for i = 1, math.max(#want, #have) do
    if want[i] == nil then
      bad("%sunexpected statement %d: %s", label, i, have[i])
    elseif have[i] == nil then
      bad("%smissing statement %d: %s", label, i, want[i])
    elseif squash(want[i]) ~= squash(have[i]) then
      bad("%sstatement %d: expected %s, got %s", label, i, want[i], have[i])
    end
  end
end

--- Normalise an expectation: "OK" | { outcome =, delay =, reason =,
-- error =, error_match =, retry_in =, failed =, sql = { {sql, p1, ...} } }.
function M.expectation(e)
  if type(e) == "string" then e = { outcome = e } end
  if type(e) ~= "table" then error("an expectation is an outcome name or a table", 2) end
  local x = {}
  for k, v in pairs(e) do x[k] = v end
  if x.outcome ~= nil then
    x.outcome = tostring(x.outcome):upper()
    if x.outcome ~= "SKIPPED" and not OUTCOMES[x.outcome] then
      error(string.format("unknown outcome %s (OK, RETRY, FAILED, ABORT_BATCH, ERROR or SKIPPED)",
        tostring(e.outcome)), 2)
    end
  end
  return x
end

local function describe_expect(x)
  local s = x.outcome or "any outcome"
  if x.delay ~= nil then s = s .. string.format(" delay=%g", x.delay) end
  if x.reason ~= nil then s = s .. " reason=" .. x.reason end
  if x.error ~= nil then s = s .. " error=" .. x.error end
  if x.error_match ~= nil then s = s .. " error matching " .. x.error_match end
  return s
end

--- The statement list of an expectation ({ "sql", p1, ... } or
-- { sql = "...", params = {...} }) as comparable trace texts.
function M.expected_sql_texts(list)
  local out = {}
  for i, s in ipairs(list) do
    local sql, vals
    if type(s) == "string" then
      sql, vals = s, { n = 0 }
    elseif s.sql then
      sql, vals = s.sql, s.params or {}
      vals.n = vals.n or #vals
    else
      sql, vals = s[1], table.pack(table.unpack(s, 2))
      vals.n = s.n and s.n - 1 or vals.n
    end
    local params = {}
    for j = 1, vals.n do
      local v = vals[j]
      params[j] = M.param_text(v, j) or M.null
    end
    out[i] = M.trace_text(sql, params, vals.n)
  end
  return out
end

--- Check one event result against an expectation.  Returns true, or false
-- and a list of what differs.
function M.check(r, expect)
  local x = M.expectation(expect)
  local problems = {}
  local function bad(fmt, ...) problems[#problems + 1] = string.format(fmt, ...) end
  local got = r.outcome or "SKIPPED"
  if x.outcome ~= nil and x.outcome ~= got then
    bad("expected %s, got %s", describe_expect(x), outcome_text(r))
  elseif x.outcome == nil and got == "ERROR" and x.error == nil and x.error_match == nil then
    bad("script error: %s", r.error)
  else
    if x.delay ~= nil and r.delay ~= tonumber(x.delay) then
      bad("expected RETRY delay=%s, got %s", tostring(x.delay), outcome_text(r))
    end
    if x.reason ~= nil and not text_matches(r.reason, x.reason) then
      bad("expected FAILED reason=%s, got %s", x.reason, outcome_text(r))
    end
    if x.error ~= nil and not text_matches(r.error, x.error) then
      bad("expected ERROR error=%s, got %s", x.error, outcome_text(r))
    end
    if x.error_match ~= nil and not (r.error and r.error:find(x.error_match)) then
      bad("expected an error matching %s, got %s", x.error_match, outcome_text(r))
    end
  end
  if x.retry_in ~= nil and (r.action ~= "retry" or r.retry_in ~= tonumber(x.retry_in)) then
    bad("expected a retry in %gs, got %s", tonumber(x.retry_in),
      r.action == "retry" and string.format("a retry in %gs", r.retry_in) or tostring(r.action))
  end
  if x.failed ~= nil and (r.action ~= "failed" or not text_matches(r.failed, x.failed)) then
    bad("expected the failed-event table with reason %s, got %s", x.failed,
      r.action == "failed" and ("reason " .. r.failed) or tostring(r.action))
  end
  if x.sql ~= nil then compare_sql(bad, "", x.sql, r.sql) end
  return #problems == 0, problems
end

--- Check a run's batch against { on_batch_start = sql list, on_batch_end =
-- sql list, aborted = true | false | "reason", error = "hook error" }.
function M.check_batch(run, x)
  local problems = {}
  local function bad(fmt, ...) problems[#problems + 1] = string.format(fmt, ...) end
  for _, hook in ipairs({ "on_batch_start", "on_batch_end" }) do
    if x[hook] ~= nil then
      local rec = run[hook]
      if rec == nil and #x[hook] > 0 then
        bad("expected %s to run", hook)
      else
        compare_sql(bad, hook .. ": ", x[hook], rec and rec.sql)
      end
    end
  end
  local aborted = x.aborted
  if aborted == true and not run.aborted then
    bad("expected the batch to roll back, it commits")
  elseif aborted == false and run.aborted then
    bad("expected the batch to commit, it rolls back: %s", run.aborted)
  elseif type(aborted) == "string" and not text_matches(run.aborted, aborted) then
    bad("expected the batch to roll back (%s), got %s", aborted, tostring(run.aborted))
  end
  if x.error ~= nil and not text_matches(run.error, x.error) then
    bad("expected the hook error %s, got %s", x.error, tostring(run.error))
  elseif x.error == nil and run.error then
    bad("%s", run.error)
  end
  return #problems == 0, problems
end

---------------------------------------------------------------------------
-- busted assertions

--- One mail as reports show it: 'to a@b "Subject" -> sent' (or the error).
M.mail_text = mail.text

--- One request as reports show it: "POST http://h/p -> 200" (or the error).
function M.http_text(h)
  local s = h.method .. " " .. h.url
  if h.body then s = s .. " " .. sformat("%q", clip(h.body, 200)) end
  return s .. " -> " .. (h.error and ("error: " .. h.error) or tostring(h.status))
end

local function as_result(v)
  if type(v) == "table" and v.events and v[1] and v.events[1] == v[1] and #v.events == 1 then
    return v[1]
  end
  return v
end

local function statement_matches(s, want, values)
  if not sql_matches(s.sql, want) then return false end
  if values.n == 0 then return true end
  if values.n ~= s.n then return false end
  for i = 1, values.n do
    local ok, t = pcall(M.param_text, values[i], i)
    if not ok then return false end
    if (t or M.null) ~= s.params[i] then return false end
  end
  return true
end

local function list_sql(sqls)
  local lines = {}
  for i, s in ipairs(sqls) do lines[i] = "  " .. M.trace_text(s.sql, s.params, s.n) end
  if #lines == 0 then return "  (no statements)" end
  return table.concat(lines, "\n")
end

--- Register the assertions with luassert (busted does this when it loads
-- this module):
--   assert.outcome(result, "OK")                 -- or RETRY, FAILED, ABORT_BATCH, ERROR, SKIPPED
--   assert.outcome(result, "RETRY", 30)          -- with the delay
--   assert.outcome(result, "FAILED", "reason")   -- with the reason
--   assert.outcome(result, "ERROR", "x.lua:3: boom")  -- folders in paths do not matter
--   assert.outcome(result, { outcome = "RETRY", retry_in = 60, failed = ..., sql = {...} })
--   assert.executed(result_or_run, "insert into t", p1, p2)   -- some statement, these parameters
--   assert.sql(result_or_run, { { "insert into t values ($1)", 1 } })  -- exactly these statements
--   assert.sql(result_or_run, {})                -- no statements at all
--   assert.requested(result_or_run, "POST", "/hooks")   -- some pgq.http request (method optional)
--   assert.mailed(result_or_run, "ann@example.com")     -- some pgq.mail.send to a matching recipient
--   assert.is_not.outcome(...), assert.is_not.executed(...)   -- luassert's negation
-- A run of one event may stand for that event's result.
function M.register_assertions(luassert)
  luassert = luassert or require "luassert"
  local function reg(name, fn)
    luassert:register("assertion", name, fn, "assertion.pgqlua." .. name .. ".positive",
      "assertion.pgqlua." .. name .. ".negative")
  end
  local function describe_result(r)
    local head = string.format("event %s (%s)", tostring(r.ev and r.ev.id), tostring(r.ev and r.ev.type))
    local s = head .. " ended " .. outcome_text(r)
    if r.action == "retry" then s = s .. string.format(", retry in %gs", r.retry_in) end
    if r.action == "failed" then s = s .. ", to the failed-event table: " .. r.failed end
    if r.traceback and r.outcome == "ERROR" then s = s .. "\n" .. r.traceback end
    return s .. "\nstatements:\n" .. list_sql(r.sql or {})
  end
  reg("outcome", function(state, args)
    local r = as_result(args[1])
    if type(r) ~= "table" or r.ev == nil then
      state.failure_message = "assert.outcome: the first argument must be an event result (run[i])"
      return false
    end
    local x = args[2]
    if type(x) ~= "table" then
      x = { outcome = x }
      local o = x.outcome and tostring(x.outcome):upper()
      if args.n >= 3 and args[3] ~= nil then
        if o == "RETRY" then x.delay = args[3]
        elseif o == "FAILED" then x.reason = args[3]
        elseif o == "ERROR" then x.error = args[3] end
      end
    end
    local ok, problems = M.check(r, x)
    if rawget(state, "failure_message") == nil then
      state.failure_message = (ok and "expected it not to end so, but " or
        table.concat(problems, "\n") .. "\n") .. describe_result(r)
    end
    return ok
  end)
  local function sqls_of(v)
    if type(v) ~= "table" then return nil end
    return v.sql
  end
  reg("executed", function(state, args)
    local sqls = sqls_of(args[1])
    local values = table.pack(table.unpack(args, 3, args.n))
    local want = args[2]
    local found = false
    for _, s in ipairs(sqls or {}) do
      if statement_matches(s, want, values) then found = true; break end
    end
    if rawget(state, "failure_message") == nil then
      local shown = {}
      for i = 1, values.n do
        local ok, t = pcall(M.param_text, values[i], i)
        shown[i] = not ok and tostring(values[i]) or t == nil and "NULL" or string.format("%q", t)
      end
      local w = want .. (values.n > 0 and " [" .. table.concat(shown, ", ") .. "]" or "")
      state.failure_message = (found and "did not expect a statement like " or "expected a statement like ")
        .. w .. "\nstatements:\n" .. list_sql(sqls or {})
    end
    return found
  end)
  reg("requested", function(state, args)
    local reqs = type(args[1]) == "table" and args[1].http or {}
    local method, want = args[2], args[3]
    if want == nil and type(method) == "string" and not method:match("^%u+$") then method, want = nil, method end
    local found = false
    for _, h in ipairs(reqs) do
      if (method == nil or h.method == method) and url_matches(h.url, want) then found = true; break end
    end
    if rawget(state, "failure_message") == nil then
      local lines = {}
      for i, h in ipairs(reqs) do lines[i] = "  " .. M.http_text(h) end
      state.failure_message = (found and "did not expect a request like " or "expected a request like ")
        .. tostring(method or "") .. " " .. tostring(want) .. "\nrequests:\n"
        .. (#lines > 0 and table.concat(lines, "\n") or "  (no requests)")
    end
    return found
  end)
  reg("mailed", function(state, args)
    local mails = type(args[1]) == "table" and args[1].mails or {}
    local want = args[2]
    local found = false
    for _, m in ipairs(mails) do
      if not m.error and mail.matches(m, want) then found = true; break end
    end
    if rawget(state, "failure_message") == nil then
      local lines = {}
      for i, m in ipairs(mails) do lines[i] = "  " .. mail.text(m) end
      state.failure_message = (found and "did not expect a mail to " or "expected a mail to ")
        .. tostring(want) .. "\nmails:\n" .. (#lines > 0 and table.concat(lines, "\n") or "  (no mails)")
    end
    return found
  end)
  reg("sql", function(state, args)
    local sqls = sqls_of(args[1]) or {}
    local want = M.expected_sql_texts(args[2] or {})
    local ok = #want == #sqls
    for i = 1, #want do
      local s = args[2][i]
      local sql = type(s) == "string" and s or s.sql or s[1]
      local vals = type(s) == "string" and { n = 0 } or s.params and table.pack(table.unpack(s.params))
        or table.pack(table.unpack(s, 2))
      if not sqls[i] or not sql_matches(sqls[i].sql, sql) or not statement_matches(sqls[i], sql, vals) then
        ok = false
      end
      if vals.n == 0 and sqls[i] and sqls[i].n ~= 0 then ok = false end
    end
    if rawget(state, "failure_message") == nil then
      state.failure_message = "expected the statements\n  " .. (#want == 0 and "(no statements)"
        or table.concat(want, "\n  "))
        .. "\ngot\n" .. list_sql(sqls)
    end
    return ok
  end)
end

if package.loaded.luassert or package.loaded.busted then
  M.register_assertions(package.loaded.luassert or require "luassert")
end

return M

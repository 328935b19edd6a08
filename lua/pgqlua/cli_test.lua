--- `pgqlua test SCRIPT EVENTS|--event JSON`: the mock batch runner
-- (pgqlua.testing) from the command line.  runtime/luatest.c calls
-- main(args) and exits with its result: 0 when every event ended as the
-- file expects (without expectations: when no event ended in a script
-- error), 1 otherwise (also when the script or the events do not load),
-- 64 for a bad command line.
--
-- The events file (YAML or JSON; "-" reads stdin) is a list of events, or
-- a map with `events` and optionally `config` (what init(config) sees and
-- the runtime's rules use: max_retries, retry_delay, ...), `answers`
-- (scripted db:exec answers: { match, rows, count } or { match, error }),
-- `http_answers` (scripted pgq.http answers: { match, status, headers,
-- body } or { match, error = "timeout" }, `once: true` for one request),
-- `mail_answers` (scripted pgq.mail.send answers: { match } accepts the
-- mails to a matching recipient, { match, error = "550 5.1.1 ..." }
-- refuses them, `once: true` for one mail),
-- and `batch` (fields of the batch table the hooks see).  An event has the
-- fields of ev (type, data, extra1..extra4, retry, id, txid, time), or
-- `logutriga:` / `jsontriga:` with { op, table, pkey, row } for a row event
-- as those triggers make it; and an optional `expect`: an outcome (OK,
-- RETRY, FAILED, ABORT_BATCH, ERROR, SKIPPED) or a map with outcome, delay,
-- reason, error, error_match, retry_in, failed and sql (a list of
-- [sql, param, ...]).  `expect_batch` may give on_batch_start and
-- on_batch_end (their SQL lists), aborted (true, false or the reason) and
-- error (a failing hook's error).
local testing = require "pgqlua.testing"
local json = require "dkjson"

local M = {}

local USAGE = [[
usage: pgqlua test SCRIPT EVENTS          EVENTS: a YAML or JSON file, - for stdin
       pgqlua test SCRIPT --event JSON   one event, e.g. '{"type":"I","data":"id=1&x=2"}'
Runs the script on the events with the mock batch runner (no database) and
prints each event's outcome and the SQL it ran.  Exit 0 when every event
ended as expected, 1 otherwise, 64 for a bad command line.]]

local function out(...)
  io.stdout:write(...)
end

-- YAML and JSON nulls to pgq.null, recursively
local function denull(v, null)
  if v == null then return testing.null end
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = denull(x, null) end
  end
  return v
end

local function decode_json(text)
  local v, _, err = json.decode(text, 1, json.null)
  if err then return nil, "not valid JSON: " .. err end
  return denull(v, json.null)
end

function M.decode(text)
  local first = text:match("^%s*(.)")
  if first == "{" or first == "[" then
    local v = decode_json(text)
    if v ~= nil then return v end
  end
  local ok, lyaml = pcall(require, "lyaml")
  if not ok then
    return nil, "reading YAML needs lua-yaml (Debian: apt install lua-yaml); JSON works without it"
  end
  local pok, v = pcall(lyaml.load, text)
  if not pok then return nil, tostring(v):gsub("^[^:]*:%d+: ", "") end
  if v == nil then return nil, "the file is empty" end
  return denull(v, lyaml.null)
end

--- Read an events document into { events, config, answers, batch }.
function M.parse(doc, name)
  if type(doc) ~= "table" then return nil, name .. ": expected a list of events or a map with events" end
  local spec
  if doc[1] ~= nil or next(doc) == nil then
    spec = { events = doc }
  else
    spec = doc
    for k in pairs(doc) do
      if k ~= "events" and k ~= "config" and k ~= "answers" and k ~= "http_answers" and k ~= "mail_answers"
          and k ~= "batch" and k ~= "expect_batch" and k ~= "description" then
        return nil, string.format("%s: unknown key '%s' (events, config, answers, http_answers, mail_answers,"
          .. " batch, expect_batch, description)", name, k)
      end
    end
    if type(spec.events) ~= "table" then return nil, name .. ": no events list" end
  end
  local events, expects = {}, {}
  for i, e in ipairs(spec.events) do
    if type(e) ~= "table" then return nil, string.format("%s: event %d is not a map", name, i) end
    local fields = {}
    for k, v in pairs(e) do fields[k] = v end
    local expect = fields.expect
    fields.expect = nil
    local ok, ev = pcall(function()
      if fields.logutriga or fields.jsontriga then
        local kind = fields.logutriga and "logutriga" or "jsontriga"
        local t = fields[kind]
        fields[kind] = nil
        if type(t) ~= "table" then error(kind .. " must be a map with op, table, pkey, row", 0) end
        for k, v in pairs(fields) do t[k] = v end
        return testing[kind](t)
      end
      return testing.event(fields)
    end)
    if not ok then
      return nil, string.format("%s: event %d: %s", name, i, tostring(ev):gsub("^[^:]*%.lua:%d+: ", ""))
    end
    if expect ~= nil then
      local eok, x = pcall(testing.expectation, expect)
      if not eok then
        return nil, string.format("%s: event %d: expect: %s", name, i, tostring(x):gsub("^[^:]*%.lua:%d+: ", ""))
      end
      expects[i] = x
    end
    events[i] = ev
  end
  return { events = events, expects = expects, config = spec.config, answers = spec.answers,
           http_answers = spec.http_answers, mail_answers = spec.mail_answers,
           batch = spec.batch, expect_batch = spec.expect_batch }
end

local function read_file(path)
  if path == "-" then return io.stdin:read("a") end
  local f, err = io.open(path, "r")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  return text
end

--- Print one event's result; returns true when it is as expected.
local function report(r, expect)
  local ev = r.ev
  local label = tostring(ev.type)
  if ev.extra1 ~= testing.null and ev.type:match("^[IUD]:") then label = label .. " " .. ev.extra1 end
  out(string.format("event %d (%s): %s", ev.id, label, r.outcome and testing.outcome_text(r) or "not run"))
  if r.action == "retry" then
    out(string.format("  -> retry in %gs", r.retry_in))
  elseif r.action == "failed" and r.outcome ~= "FAILED" then
    out("  -> failed-event table: " .. r.failed)
  elseif r.action == "abort" then
    out("  -> the batch rolls back")
  end
  out("\n")
  for _, s in ipairs(r.sql) do
    out(s.sent and "    db:send " or "    db:exec ", testing.trace_text(s.sql, s.params, s.n),
      s.error and ("  -> SQL error: " .. s.error) or "", "\n")
  end
  for _, h in ipairs(r.http or {}) do
    out("    http ", testing.http_text(h), "\n")
  end
  for _, m in ipairs(r.mails or {}) do
    out("    mail ", testing.mail_text(m), "\n")
  end
  for _, l in ipairs(r.logs) do
    out(string.format("    log %s %s: %s\n", l.level, l.where, l.message))
  end
  local tb = r.outcome == "ERROR" and r.traceback and r.traceback:match("\n(stack traceback:.*)$")
  if tb then out("    ", (tb:gsub("\n", "\n    ")), "\n") end
  local ok, problems
  if expect then
    ok, problems = testing.check(r, expect)
  else
    ok = r.outcome ~= "ERROR"
    problems = { "script error (add `expect: ERROR` if that is what the event should do)" }
  end
  if not ok then
    for _, p in ipairs(problems) do out("    NOT AS EXPECTED: ", p, "\n") end
  end
  return ok
end

local function report_hook(rec)
  if not rec then return end
  if #rec.sql == 0 and #rec.logs == 0 and not rec.error then return end
  out(rec.hook, rec.error and (": ERROR error=" .. rec.error) or "", "\n")
  for _, s in ipairs(rec.sql) do
    out(s.sent and "    db:send " or "    db:exec ", testing.trace_text(s.sql, s.params, s.n), "\n")
  end
  for _, l in ipairs(rec.logs) do out(string.format("    log %s %s: %s\n", l.level, l.where, l.message)) end
end

function M.main(args)
  local script, file
  local inline = {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-h" or a == "--help" then
      out(USAGE, "\n")
      return 0
    elseif a == "--event" then
      if not args[i + 1] then
        io.stderr:write("pgqlua: test: --event needs a JSON event (see pgqlua test --help)\n")
        return 64
      end
      inline[#inline + 1] = args[i + 1]
      i = i + 1
    elseif a:sub(1, 8) == "--event=" then
      inline[#inline + 1] = a:sub(9)
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      io.stderr:write(string.format("pgqlua: test: unknown option \"%s\" (see pgqlua test --help)\n", a))
      return 64
    elseif not script then
      script = a
    elseif not file then
      file = a
    else
      io.stderr:write("pgqlua: test: too many arguments (see pgqlua test --help)\n")
      return 64
    end
    i = i + 1
  end
  if not script or (not file and #inline == 0) then
    io.stderr:write("pgqlua: test: give a SCRIPT and an EVENTS file or --event JSON (see pgqlua test --help)\n")
    return 64
  end

  local spec = { events = {}, expects = {} }
  if file then
    local text, err = read_file(file)
    if not text then
      io.stderr:write(string.format("pgqlua: test: cannot read %s\n", err or file))
      return 1
    end
    local name = file == "-" and "stdin" or file
    local doc, derr = M.decode(text)
    if doc == nil then
      io.stderr:write(string.format("pgqlua: test: %s: %s\n", name, derr))
      return 1
    end
    spec, err = M.parse(doc, name)
    if not spec then
      io.stderr:write("pgqlua: test: ", err, "\n")
      return 1
    end
  end
  for n, text in ipairs(inline) do
    local doc, err = decode_json(text)
    if doc == nil then
      io.stderr:write(string.format("pgqlua: test: --event %d: %s\n", n, err))
      return 1
    end
    if doc[1] == nil then doc = { doc } end
    local more, perr = M.parse(doc, "--event " .. n)
    if not more then
      io.stderr:write("pgqlua: test: ", perr, "\n")
      return 1
    end
    for k, ev in ipairs(more.events) do
      spec.events[#spec.events + 1] = ev
      spec.expects[#spec.events] = more.expects[k]
    end
  end

  local ok, consumer = pcall(testing.load, script, { config = spec.config, answers = spec.answers,
                                                     http_answers = spec.http_answers,
                                                     mail_answers = spec.mail_answers })
  if not ok then
    io.stderr:write("pgqlua: test: ", tostring(consumer), "\n")
    return 1
  end
  for _, l in ipairs(consumer.load_logs) do
    out(string.format("load: log %s %s: %s\n", l.level, l.where, l.message))
  end
  local run = consumer:run(spec.events, { batch = spec.batch })
  report_hook(run.on_batch_start)
  local counts, order = {}, { "OK", "RETRY", "FAILED", "ABORT_BATCH", "ERROR" }
  local bad = 0
  for n, r in ipairs(run.events) do
    if not report(r, spec.expects[n]) then bad = bad + 1 end
    local key = r.outcome or "not run"
    counts[key] = (counts[key] or 0) + 1
  end
  report_hook(run.on_batch_end)
  if run.aborted then out("batch rolled back: ", run.aborted, "\n") end
  local parts = {}
  for _, k in ipairs(order) do
    if counts[k] then parts[#parts + 1] = counts[k] .. " " .. k end
  end
  if counts["not run"] then parts[#parts + 1] = counts["not run"] .. " not run" end
  if spec.expect_batch then
    local bok, problems = testing.check_batch(run, spec.expect_batch)
    if not bok then
      for _, p in ipairs(problems) do out("    NOT AS EXPECTED: batch: ", p, "\n") end
      bad = bad + 1
    end
  elseif run.error then
    out("    NOT AS EXPECTED: ", run.error, "\n")
    bad = bad + 1
  end
  out(string.format("%d event%s: %s; %s\n", #run.events, #run.events == 1 and "" or "s",
    #parts > 0 and table.concat(parts, ", ") or "none",
    bad == 0 and "all as expected" or (bad .. " not as expected")))
  return bad == 0 and 0 or 1
end

return M

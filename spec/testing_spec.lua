-- The mock batch runner itself (pgqlua.testing) and `pgqlua test`
-- (pgqlua.cli_test).  What must agree with the real runtime is pinned by
-- the contract fixtures (contract_spec.lua, t_contract.sh); this covers the
-- runner's own API.
local testing = require "pgqlua.testing"
local cli_test = require "pgqlua.cli_test"

local tmp

local function write(name, text)
  local f = assert(io.open(tmp .. "/" .. name, "w"))
  f:write(text)
  f:close()
  return tmp .. "/" .. name
end

-- run cli_test.main with its stdout and stderr captured
-- luacheck: push ignore 122
local function cli(args, stdin)
  local o, e = {}, {}
  local real_out, real_err, real_in = io.stdout, io.stderr, io.stdin
  io.stdout = { write = function(_, ...) for _, s in ipairs({ ... }) do o[#o + 1] = s end end }
  io.stderr = { write = function(_, ...) for _, s in ipairs({ ... }) do e[#e + 1] = s end end }
  if stdin then io.stdin = { read = function() return stdin end } end
  local ok, rc = pcall(cli_test.main, args)
  io.stdout, io.stderr, io.stdin = real_out, real_err, real_in
  assert(ok, rc)
  return rc, table.concat(o), table.concat(e)
end
-- luacheck: pop

setup(function()
  tmp = os.tmpname()
  os.remove(tmp)
  assert(os.execute("mkdir -p " .. tmp .. "/models"))
end)

teardown(function()
  os.execute("rm -rf " .. tmp)
end)

describe("testing.event", function()
  it("fills in the fields the runtime always sets", function()
    local ev = testing.event{ data = "x" }
    assert.is_nil(ev.id)       -- numbered by the run
    assert.are.equal(0, ev.retry)
    assert.are.equal("event", ev.type)
    assert.are.equal(testing.null, ev.extra1)
    assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%+00$", ev.time)
  end)

  it("refuses unknown fields and wrong types", function()
    assert.has_error(function() testing.event{ extra = "x" } end)
    assert.has_error(function() testing.event{ id = "1" } end)
    assert.has_error(function() testing.event{ data = {} } end)
  end)
end)

describe("testing.logutriga and testing.jsontriga", function()
  -- the payloads pgq's own triggers wrote for the same rows (PostgreSQL 15, pgq 3)
  it("build what pgq.logutriga writes", function()
    local ev = testing.logutriga{ op = "I", table = "public.kt_lu", pkey = "id",
      columns = { "id", "name", "note", "price", "ok" },
      row = { id = 1, name = "a b&c=d%+é/~*-_.", note = testing.null, price = "1.50", ok = true } }
    assert.are.equal("I:id", ev.type)
    assert.are.equal("public.kt_lu", ev.extra1)
    assert.are.equal("id=1&name=a+b%26c%3dd%25%2b%c3%a9%2f%7e%2a-_.&note&price=1.50&ok=t", ev.data)
    assert.are.equal("a b&c=d%+é/~*-_.", require("pgqlua.payload").urldecode(ev.data).name)
  end)

  it("build what pgq.jsontriga writes", function()
    local ev = testing.jsontriga{ op = "DELETE", table = "public.kt_js", pkey = { "id", "k2" },
      columns = { "id", "k2", "name", "note", "price", "ok", "f" },
      row = { id = 1, k2 = "k", name = 'a "q" é', note = testing.null, price = "1.50", ok = false, f = 2.5 } }
    assert.are.equal('{"op":"DELETE","table":["public","kt_js"],"pkey":["id","k2"]}', ev.type)
    assert.are.equal("public.kt_js", ev.extra1)
    assert.are.equal('{"id":1,"k2":"k","name":"a \\"q\\" é","note":null,"price":"1.50","ok":false,"f":"2.5"}',
      ev.data)
  end)

  it("default to an insert into public.test, key id", function()
    local ev = testing.logutriga{ table = "t", row = { id = 3, a = "x" } }
    assert.are.equal("I:id", ev.type)
    assert.are.equal("public.t", ev.extra1)
    assert.are.equal("id=3&a=x", ev.data)
  end)
end)

describe("a consumer under the mock runner", function()
  it("loads modules from the script's folder, text only, and shares pgq", function()
    write("models/price.lua", "return { vat = function(x) return x * 2 end }")
    local script = write("uses_model.lua", [[
      local price = require "models.price"
      local same = require("pgqlua") == pgq
      function process_event(ev)
        return pgq.EVENT_FAILED, tostring(same) .. " " .. price.vat(21)
      end]])
    assert.outcome(testing.run(script, { {} }), "FAILED", "true 42")
  end)

  it("raises the runtime's load errors", function()
    local none = write("none.lua", "x = 1")
    assert.has_error(function() testing.load(none) end,
      none .. ": process_event is not defined (the script must define function process_event(ev, db))")
    local notfn = write("notfn.lua", "process_event = 1")
    assert.has_error(function() testing.load(notfn) end, notfn .. ": process_event must be a function, not a number")
    local syntax = write("syntax.lua", "function process_event(")
    local ok, err = pcall(testing.load, syntax)
    assert.is_false(ok)
    assert.matches("syntax%.lua:1: ", err)
    local badinit = write("badinit.lua", "function process_event() end\nfunction init() error('no') end")
    ok, err = pcall(testing.load, badinit)
    assert.is_false(ok)
    assert.are.equal(badinit .. ":2: no", err)
  end)

  it("answers db:exec by pattern, once, in order, or with a function", function()
    local script = write("reads.lua", [[
      function process_event(ev, db)
        local a = db:exec("select a from t where id = $1", ev.id)
        local b, n = db:exec("select b from u")
        local c = db:exec("select c")
        return pgq.EVENT_FAILED, table.concat({ tostring(a[1] and a[1].a), tostring(b[1] and b[1].b), n,
          tostring(c[1] and c[1].c) }, " ")
      end]])
    local consumer = testing.load(script)
    consumer:answer("from t where", function(_, id) return { { a = id * 10 } } end)
    consumer:answer("select b", { rows = { { b = "x" } }, count = 9 })
    consumer:answer_next({ { a = "first" } })
    local run = consumer:run({ { id = 1 }, { id = 2 } })
    assert.outcome(run[1], "FAILED", "first x 9 nil")
    assert.outcome(run[2], "FAILED", "20 x 9 nil")
  end)

  it("records every statement, and commits only what OK events and the hooks wrote", function()
    local script = write("writes.lua", [[
      function on_batch_start(b, db) db:exec("select 1") end
      function process_event(ev, db)
        db:exec("insert into t values ($1)", ev.data)
        if ev.data == "bad" then return pgq.EVENT_FAILED, "bad" end
      end]])
    local run = testing.run(script, { { data = "a" }, { data = "bad" } })
    assert.are.equal(3, #run.sql)
    assert.are.equal(2, #run.committed)
    assert.are.equal("a", run.committed[2].params[1])
    assert.is_false(run[2].kept)
  end)

  it("records db:send, and turns a failed send into the event's error when it ends", function()
    local script = write("sends.lua", [[
      function process_event(ev, db)
        db:send("insert into t values ($1)", ev.data)
        if ev.data == "late" then
          local ok, err = pcall(db.exec, db, "select 1")
          return pgq.EVENT_FAILED, ok and "no error" or err
        end
      end]])
    local consumer = testing.load(script)
    consumer:answer("insert into t values", function(_, v)
      if v ~= "ok" then return testing.sql_error("23505", "duplicate key") end
      return { count = 1 }
    end)
    local run = consumer:run({ { data = "ok" }, { data = "dup" }, { data = "late" } })
    assert.outcome(run[1], "OK")
    assert.is_true(run[1].sql[1].sent)
    assert.outcome(run[2], "ERROR", "db:send: 23505 duplicate key")
    assert.outcome(run[3], "FAILED", "db:exec: an earlier statement of this event failed"
      .. " (db:send: 23505 duplicate key); the event's writes will be rolled back")
    assert.are.equal(1, #run.committed)
  end)

  it("refuses transaction control as ldb.c does: first word, past blanks and comments", function()
    for _, sql in ipairs({ "commit", "  /* c */ -- x\n ROLLBACK", "end", "Begin", "start transaction",
                           "savepoint x", "release x", "abort", "prepare transaction 'x'" }) do
      assert.is_true(testing.is_transaction_control(sql), sql)
    end
    for _, sql in ipairs({ "select 1", "prepare p as select 1", "commitment", "insert into commit values (1)",
                           "/* commit */ select 1" }) do
      assert.is_falsy(testing.is_transaction_control(sql), sql)
    end
    local script = write("commits.lua", "function process_event(ev, db) db:send('commit') end")
    local run = testing.run(script, { {} })
    assert.outcome(run[1], "ERROR", script .. ":1: db:send: transaction control (COMMIT, ROLLBACK, ...) is not allowed:"
      .. " the runtime owns the batch's transaction")
  end)

  it("enforces event_timeout", function()
    local script = write("loops.lua", "function process_event() while true do end end")
    local run = testing.run(script, { {} }, { config = { event_timeout = 0.05 } })
    assert.outcome(run[1], "ERROR", "event_timeout exceeded: the script ran for more than 0.05 seconds")
  end)

  it("refuses to use db outside a batch", function()
    local script = write("keeps_db.lua", [[
      local saved
      function process_event(ev, db)
        if saved then saved:exec("select 1") end
        saved = db
      end]])
    local consumer = testing.load(script)
    consumer:run({ {} })
    local run = consumer:run({ {} })
    assert.outcome(run[1], "OK")
    assert.are.equal(1, #run[1].sql)
  end)
end)

describe("pgqlua test", function()
  local script
  setup(function()
    script = write("cli.lua", [[
      function process_event(ev, db)
        if ev.data == "boom" then error("boom") end
        db:exec("insert into t values ($1)", ev.data)
        if ev.type == "later" then return pgq.EVENT_RETRY, 5 end
      end]])
  end)

  it("prints outcomes, SQL and a summary, and exits 0 when all is as expected", function()
    local events = write("ev.yaml", [[
events:
  - {data: a, expect: OK}
  - {type: later, data: b, expect: {outcome: RETRY, delay: 5}}
  - logutriga: {op: I, table: t, row: {id: 1}}
]])
    local rc, out = cli({ script, events })
    assert.are.equal(0, rc)
    assert.matches('event 1 %(event%): OK\n    db:exec insert into t values %(%$1%) %["a"%]', out)
    assert.matches("event 2 %(later%): RETRY delay=5  %-> retry in 5s", out)
    assert.matches("event 3 %(I:id public.t%): OK", out)
    assert.matches("3 events: 2 OK, 1 RETRY; all as expected\n$", out)
  end)

  it("prints db:send statements as db:send", function()
    local sender = write("sender.lua",
      "function process_event(ev, db) db:send('insert into t values ($1)', ev.data) end")
    local rc, out = cli({ sender, "--event", '{"data":"a"}' })
    assert.are.equal(0, rc)
    assert.matches('event 1 %(event%): OK\n    db:send insert into t values %(%$1%) %["a"%]', out)
  end)

  it("exits 1 for a script error or an unexpected outcome, naming file:line", function()
    local rc, out = cli({ script, "--event", '{"data":"boom"}' })
    assert.are.equal(1, rc)
    assert.matches("ERROR error=[^\n]*cli%.lua:2: boom", out)
    rc, out = cli({ script, "--event", '{"data":"a","expect":"FAILED"}' })
    assert.are.equal(1, rc)
    assert.matches("NOT AS EXPECTED: expected FAILED, got OK", out)
  end)

  it("reads JSON from stdin", function()
    local rc, out = cli({ script, "-" }, '[{"data": "x", "expect": "OK"}]')
    assert.are.equal(0, rc)
    assert.matches("1 event: 1 OK; all as expected", out)
  end)

  it("reports bad command lines with 64 and bad files with 1", function()
    assert.are.equal(64, (cli({})))
    assert.are.equal(64, (cli({ script, "--nope" })))
    local rc, _, err = cli({ script, tmp .. "/missing.yaml" })
    assert.are.equal(1, rc)
    assert.matches("cannot read", err)
    rc, _, err = cli({ script, write("bad.yaml", "events: [{colour: red}]") })
    assert.are.equal(1, rc)
    assert.matches("event 1: testing.event: unknown field 'colour'", err)
  end)
end)

describe("the mock runner's isolation of a script", function()
  local dir
  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
  end)
  teardown(function()
    os.execute("rm -rf " .. dir)
  end)
  local function file(name, text)
    local path = dir .. "/" .. name
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
    return path
  end

  it("keeps a script that replaces string.format from turning an unexpected outcome into exit 0", function()
    local cheat = file("cheat.lua", [[
      local noop = function() return "" end
      string.format, string.rep, string.gsub, string.find = noop, noop, noop, noop
      table.concat, table.insert = noop, noop
      function process_event() return pgq.EVENT_RETRY end]])
    local rc, out = cli({ cheat, "--event", '{"data":"a","expect":"OK"}' })
    assert.are.equal(1, rc)
    assert.matches("NOT AS EXPECTED: expected OK, got RETRY", out)
    assert.are.equal("x1", string.format("x%d", 1))
  end)

  it("lets os.getenv read only the variables in env_allow, as the runtime does", function()
    local c = testing.load(file("env.lua", [[
      function process_event(ev)
        if os.getenv(ev.data) ~= nil then return pgq.EVENT_FAILED, "read " .. ev.data end
      end]]), { config = { env_allow = { "HOME" } } })
    assert.outcome(c:event({ data = "PATH" }), "OK")
    assert.outcome(c:event({ data = "HOME" }), "FAILED", "read HOME")
  end)

  it("gives each script its own string metatable: a change is seen by that script only", function()
    local a = testing.load(file("mt_a.lua", [[
      getmetatable("").__index = { upper = function() return "hacked" end }
      getmetatable("").__tostring = function() return "hacked" end
      function process_event(ev) return pgq.EVENT_FAILED, ev.data:upper() end]]))
    local b = testing.load(file("mt_b.lua", [[
      function process_event(ev) return pgq.EVENT_FAILED, ev.data:upper() .. tostring("!") end]]))
    assert.outcome(a:event({ data = "x" }), "FAILED", "hacked")
    assert.outcome(b:event({ data = "x" }), "FAILED", "X!")
    assert.are.equal("X", ("x"):upper())
    assert.are.equal(string, getmetatable("").__index)
  end)

  it("gives each script its own pgq.null: rawset on it is not seen by the next script", function()
    local a = testing.load(file("null_a.lua", [[
      rawset(pgq.null, "mark", "set by a")
      function process_event(ev) return pgq.EVENT_FAILED, tostring(rawget(ev.extra1, "mark")) end]]))
    local b = testing.load(file("null_b.lua", [[
      function process_event(ev)
        return pgq.EVENT_FAILED, tostring(rawget(pgq.null, "mark")) .. " " .. tostring(ev.extra1 == pgq.null)
      end]]))
    assert.outcome(a:event({}), "FAILED", "set by a")
    assert.outcome(b:event({}), "FAILED", "nil true")
    assert.is_nil(rawget(testing.null, "mark"))
  end)

  it("keeps the runner's state out of the script's reach", function()
    local c = testing.load(file("reach.lua", [[
      function process_event(ev, db)
        return pgq.EVENT_FAILED, tostring(rawget(db, "_state")) .. " " .. tostring(getmetatable(db))
      end]]))
    assert.outcome(c:event({}), "FAILED", "nil db")
  end)

  it("stops a loop inside a coroutine at event_timeout", function()
    local c = testing.load(file("co.lua", [[
      function process_event()
        local co = coroutine.create(function() while true do end end)
        local ok, err = coroutine.resume(co)
        error(err, 0)
      end]]), { config = { event_timeout = 0.05 } })
    assert.outcome(c:event({}), "ERROR", "event_timeout exceeded: the script ran for more than 0.05 seconds")
  end)

  it("measures event_timeout in wall-clock time, as the runtime does", function()
    local system = require "system"
    local c = testing.load(file("wall.lua", [[
      function process_event(ev, db)
        db:exec("select pg_sleep(0.3)")
        for _ = 1, 100000 do end
      end]]), { config = { event_timeout = 0.1 } })
    -- the answer sleeps without using CPU time; only a wall clock sees it
    c:answer("pg_sleep", function() system.sleep(0.3); return {} end)
    assert.outcome(c:event({}), "ERROR", "event_timeout exceeded: the script ran for more than 0.1 seconds")
  end)

  it("gives the top level and init the runtime's load limit: 30 s without event_timeout", function()
    local c = testing.load(file("slow_load.lua", [[
      local t = os.clock()
      while os.clock() - t < 0.2 do end
      function init() local u = os.clock(); while os.clock() - u < 0.2 do end end
      function process_event() end]]))
    assert.outcome(c:event({}), "OK")
  end)

  it("gives the top level and init event_timeout when it is set, as the runtime does", function()
    local ok, err = pcall(testing.load, file("slow_load2.lua", [[
      function init() while true do end end
      function process_event() end]]), { config = { event_timeout = 0.05 } })
    assert.is_false(ok)
    assert.matches("event_timeout exceeded: the script ran for more than", err, 1, true)
  end)
end)

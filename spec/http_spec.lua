-- pgqlua.http (what pgq.http.request does around the transport) and the
-- mock runner's HTTP: answer_http, answer_http_once, run[i].http and
-- assert.requested.
local testing = require "pgqlua.testing"
local http = require "pgqlua.http"

describe("pgqlua.http", function()
  it("fills in the method, the JSON body with its Content-Type and the Idempotency-Key", function()
    local p = assert(http.prepare({ url = "http://h/x", json = { a = 1 } }, { key = "q/c/7", timeout = 30 }))
    assert.equal("POST", p.method)
    assert.equal('{"a":1}', p.body)
    assert.same({ ["Content-Type"] = "application/json", ["Idempotency-Key"] = "q/c/7" }, p.headers)
    assert.same({ "Content-Type: application/json", "Idempotency-Key: q/c/7" }, p.header_lines)
    assert.equal(30.0, p.timeout)
  end)

  it("keeps the script's own Idempotency-Key and sends a GET without a body", function()
    local p = assert(http.prepare({ url = "https://h/x", headers = { ["idempotency-key"] = "mine" } },
      { key = "q/c/7" }))
    assert.equal("GET", p.method)
    assert.same({ ["idempotency-key"] = "mine" }, p.headers)
  end)

  it("refuses what it cannot send, with the reason", function()
    assert.same({ nil, "pgq.http.request: url must start with http:// or https://: ftp://h/x" },
      { http.prepare({ url = "ftp://h/x?k=secret" }) })
    assert.same({ nil, "pgq.http.request: header X must be a string without line breaks" },
      { http.prepare({ url = "http://h", headers = { X = "a\r\nB: c" } }) })
    assert.same({ nil, "pgq.http.request: give body or json, not both" },
      { http.prepare({ url = "http://h", body = "", json = {} }) })
    assert.same({ nil, "pgq.http.request: timeout must be seconds above 0, not 0" },
      { http.prepare({ url = "http://h", timeout = 0 }) })
  end)

  it("shows URLs without user, password, query or fragment", function()
    assert.equal("https://h:8443/a/b", http.safe_url("https://u:p@h:8443/a/b?token=x#f"))
    assert.equal("http://h", http.safe_url("http://h?x"))
  end)
end)

describe("the mock runner's pgq.http", function()
  local consumer, dir
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir '" .. dir .. "'"))
    local path = dir .. "/hook.lua"
    local f = assert(io.open(path, "w"))
    f:write([[
function process_event(ev, db)
  local res = pgq.http.request{ url = "https://hooks.test/orders?sig=1", json = { id = ev.id } }
  if res.status >= 500 then return pgq.EVENT_RETRY, tonumber(res.headers["retry-after"]) end
  if res.status >= 400 then return pgq.EVENT_FAILED, res.status .. " " .. res.body end
  db:exec("insert into delivered values ($1)", res.body)
end
]])
    f:close()
    consumer = testing.load(path, { config = { queue_name = "q", consumer_name = "c" } })
  end)

  it("records each request with the Idempotency-Key the runtime adds", function()
    consumer:answer_http("/orders", { status = 200, body = "fine" })
    local run = consumer:run({ testing.event{ id = 5, type = "x" } })
    assert.outcome(run[1], "OK")
    assert.equal(1, #run[1].http)
    local h = run[1].http[1]
    assert.equal("POST", h.method)
    assert.equal('{"id":5}', h.body)
    assert.equal("q/c/5", h.headers["Idempotency-Key"])
    assert.equal(200, h.status)
    assert.requested(run[1], "POST", "hooks.test/orders")
    assert.requested(run, "/orders")
    assert.is_not.requested(run[1], "GET", "/orders")
    assert.executed(run[1], "insert into delivered", "fine")
  end)

  it("answers once, in order, before the standing answers, and from functions", function()
    consumer:answer_http("/orders", function(req) return { status = 200, body = req.headers["Idempotency-Key"] } end)
    consumer:answer_http_once("/orders", { status = 503, headers = { ["Retry-After"] = "7" } })
    consumer:answer_http_once("POST /orders", { status = 404, body = "no such order" })
    local run = consumer:run({ testing.event{ id = 1 }, testing.event{ id = 2 }, testing.event{ id = 3 } })
    assert.outcome(run[1], "RETRY", 7)
    assert.outcome(run[2], "FAILED", "404 no such order")
    assert.outcome(run[3], "OK")
    assert.executed(run[3], "insert into delivered", "q/c/3")
  end)

  it("folds pgq.http.send's responses into the event's outcome, undoing its writes", function()
    local path = dir .. "/send.lua"
    local f = assert(io.open(path, "w"))
    f:write([[
function process_event(ev, db)
  db:exec("insert into t values ($1)", ev.data)
  if ev.type == "decide" then
    pgq.http.send({ url = "http://x.test" .. ev.data }, function(res)
      if res.status == 500 then return pgq.EVENT_OK end
    end)
  else
    pgq.http.send{ url = "http://x.test" .. ev.data, body = "b" }
  end
end
]])
    f:close()
    local c = testing.load(path)
    c:answer_http("/a", { status = 204 })
    c:answer_http("/b", { status = 429, headers = { ["Retry-After"] = "9" } })
    c:answer_http("/c", { status = 410, body = string.rep("x", 300) })
    c:answer_http("/d", testing.http_error("connect"))
    c:answer_http("/e", { status = 500 })
    local run = c:run({ testing.event{ data = "/a" }, testing.event{ data = "/b" }, testing.event{ data = "/c" },
                        testing.event{ data = "/d" }, testing.event{ type = "decide", data = "/e" } })
    assert.outcome(run[1], "OK")
    assert.outcome(run[2], "RETRY", 9)
    assert.outcome(run[3], "FAILED",
      "pgq.http.send: POST http://x.test/c: status 410: " .. string.rep("x", 200) .. "...")
    assert.outcome(run[4], "RETRY")
    assert.outcome(run[5], "OK")
    assert.is_true(run[1].http[1].sent)
    assert.same({ "/a", "/e" }, { run.committed[1].params[1], run.committed[2].params[1] })
  end)

  it("reads Retry-After as seconds or as an HTTP date", function()
    assert.equal(120.0, http.retry_after("120"))
    local now = os.time()
    assert.equal(30.0, http.retry_after(os.date("!%a, %d %b %Y %H:%M:%S GMT", now + 30), now))
    assert.is_nil(http.retry_after("soon"))
  end)

  it("raises a transport error as the runtime words it", function()
    consumer:answer_http("/orders", testing.http_error("timeout"))
    local run = consumer:run({ testing.event{ id = 1 } })
    assert.outcome(run[1], "ERROR",
      "hook.lua:2: pgq.http.request: POST https://hooks.test/orders: Timeout was reached (after 30 seconds)")
    assert.equal("Timeout was reached (after 30 seconds)", run[1].http[1].error)
  end)
end)

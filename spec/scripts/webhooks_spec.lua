-- scripts/webhooks.lua: each order row change posted to the webhook, the
-- response deciding the event's outcome.
local testing = require "pgqlua.testing"
local json = require "dkjson"

local HOOK = "https://hooks.example/orders"

local function order(op, row)
  return testing.jsontriga{ op = op, table = "public.orders", row = row }
end

describe("scripts/webhooks.lua", function()
  local consumer
  before_each(function()
    consumer = testing.load("scripts/webhooks.lua", {
      config = { queue_name = "order_events", consumer_name = "webhooks",
                 env_allow = { "WEBHOOK_URL", "WEBHOOK_TOKEN" }, retry_delay = 60, max_retries = 3 },
      env = { WEBHOOK_URL = HOOK, WEBHOOK_TOKEN = "t0k" },
    })
  end)

  it("posts each change as JSON with the event's Idempotency-Key and the token", function()
    local run = consumer:run({
      order("I", { id = 7, customer_id = 3, amount = "12.50", note = testing.null }),
      order("U", { id = 7, customer_id = 3, amount = "13.00", note = "gift" }),
      order("D", { id = 7, customer_id = 3, amount = "13.00", note = "gift" }),
    })
    for i, op in ipairs({ "insert", "update", "delete" }) do
      assert.outcome(run[i], "OK")
      assert.requested(run[i], "POST", HOOK)
      local req = run[i].http[1]
      assert.equal("order_events/webhooks/" .. run[i].ev.id, req.headers["Idempotency-Key"])
      assert.equal("Bearer t0k", req.headers.Authorization)
      local body = json.decode(req.body, 1, json.null)
      assert.equal("order." .. op, body.event)
      assert.equal(7, body.id)
      assert.equal(run[i].ev.id, body.event_id)
    end
    local first = json.decode(run[1].http[1].body, 1, "NULL")
    assert.same({ id = 7, customer_id = 3, amount = "12.50", note = "NULL" }, first.order)
    assert.same({}, run.sql)
  end)

  it("retries the event after Retry-After when the receiver answers 503", function()
    consumer:answer_http_once(HOOK, { status = 503, headers = { ["Retry-After"] = "30" } })
    local run = consumer:run({ order("I", { id = 8 }), order("I", { id = 9 }) })
    assert.outcome(run[1], { outcome = "RETRY", delay = 30, retry_in = 30 })
    assert.outcome(run[2], "OK")
  end)

  it("fails the event with the status and the body on a 4xx", function()
    consumer:answer_http(HOOK, { status = 422, body = "unknown customer" })
    local r = consumer:event(order("I", { id = 9 }))
    assert.outcome(r, "FAILED", "pgq.http.send: POST https://hooks.example/orders: status 422: unknown customer")
  end)

  it("retries a transport error, then fails it after max_retries", function()
    consumer:answer_http(HOOK, testing.http_error("connect"))
    local ev = order("I", { id = 9 })
    ev.retry = 3
    local r = consumer:event(ev)
    assert.outcome(r, { outcome = "RETRY", failed = "max_retries (3) reached: pgq.http.send: POST"
      .. " https://hooks.example/orders: Couldn't connect to server" })
  end)

  it("fails what is not an orders row, without a request", function()
    local r = consumer:event(testing.jsontriga{ op = "I", table = "public.customers", row = { id = 1 } })
    assert.outcome(r, "FAILED", "not an orders row: public.customers")
    assert.is_not.requested(r, HOOK)
  end)

  it("does not load without WEBHOOK_URL", function()
    assert.has_error(function()
      testing.load("scripts/webhooks.lua", { config = { env_allow = { "WEBHOOK_URL" } }, env = {} })
    end, "webhooks.lua: no webhook URL: set WEBHOOK_URL and list it in env_allow")
  end)
end)

-- scripts/payments.lua: retries on a transient condition, fails poison.
local testing = require "pgqlua.testing"

local function payment(data, fields)
  local f = { type = "payment", data = data }
  for k, v in pairs(fields or {}) do f[k] = v end
  return testing.event(f)
end

describe("scripts/payments.lua", function()
  local consumer
  before_each(function()
    consumer = testing.load("scripts/payments.lua", { config = { retry_delay = 30, max_retries = 3 } })
  end)

  it("books a payment against its order", function()
    consumer:answer("from orders where id", { { id = 7 } })
    local run = consumer:run({ payment('{"order_id": 7, "cents": 1250}', { id = 41 }) })
    assert.outcome(run[1], "OK")
    assert.sql(run[1], {
      { "select id from orders where id = $1 for update nowait", 7 },
      { "insert into payments (ev_id, order_id, cents) values ($1, $2, $3)", 41, 7, 1250 },
      { "update orders set paid_cents = paid_cents + $2 where id = $1", 7, 1250 },
    })
  end)

  it("retries (after retry_delay) while the order is not there yet", function()
    local run = consumer:run({ payment('{"order_id": 7, "cents": 1250}') })
    assert.outcome(run[1], "RETRY")
    assert.are.equal(30, run[1].retry_in)
    assert.are.equal("warn", run[1].logs[1].level)
  end)

  it("gives up after max_retries: the runtime fails the event", function()
    local run = consumer:run({ payment('{"order_id": 7, "cents": 1250}', { retry = 3 }) })
    assert.outcome(run[1], { outcome = "RETRY", failed = "max_retries (3) reached: retried by the script" })
  end)

  it("retries soon when the order row is locked", function()
    consumer:answer("for update nowait",
      testing.sql_error("55P03", 'could not obtain lock on row in relation "orders"'))
    local run = consumer:run({ payment('{"order_id": 7, "cents": 1}') })
    assert.outcome(run[1], "RETRY", 5)
  end)

  it("fails poison events with the reason, whatever their retry count", function()
    local run = consumer:run({
      payment("not json", { id = 1 }),
      payment('{"order_id": "7", "cents": 1}', { id = 2 }),
      payment('{"order_id": 7, "cents": 0}', { id = 3 }),
      testing.event{ id = 4, type = "refund", data = "{}" },
    })
    assert.outcome(run[1], "FAILED", "payment event 1: data is not JSON")
    assert.outcome(run[2], "FAILED", 'payment event 2: expected {"order_id": integer, "cents": integer}')
    assert.outcome(run[3], "FAILED", "payment event 3: cents must be positive, got 0")
    assert.outcome(run[4], "FAILED", "payment event 4: unknown event type refund")
    assert.sql(run[1], {})
  end)

  it("is an error for any other SQL failure", function()
    consumer:answer("from orders", testing.sql_error("42P01", 'relation "orders" does not exist'))
    local run = consumer:run({ payment('{"order_id": 7, "cents": 1}') })
    assert.outcome(run[1], "ERROR", 'db:exec: 42P01 relation "orders" does not exist')
  end)
end)

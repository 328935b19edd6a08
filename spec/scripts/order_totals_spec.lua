-- scripts/order_totals.lua: a summary table kept by upserts from
-- pgq.jsontriga rows, with scripted answers for what it reads.
local testing = require "pgqlua.testing"

local function order(op, row)
  return testing.jsontriga{ op = op, table = "public.orders", pkey = "id", row = row }
end

describe("scripts/order_totals.lua", function()
  local consumer
  before_each(function()
    consumer = testing.load("scripts/order_totals.lua")
  end)

  it("adds a new order to its customer's totals and remembers it", function()
    local run = consumer:run({ order("INSERT", { id = 1, customer_id = 7, amount = "12.50" }) })
    assert.outcome(run[1], "OK")
    assert.executed(run[1], "select customer_id, amount from order_totals_seen", 1)
    assert.executed(run[1], "insert into customer_totals", 7, 1, "12.50")
    assert.executed(run[1], "insert into order_totals_seen", 1, 7, "12.50")
  end)

  it("moves an updated order from the old customer to the new one", function()
    consumer:answer("from order_totals_seen", { { customer_id = 7, amount = "12.50" } })
    local run = consumer:run({ order("UPDATE", { id = 1, customer_id = 8, amount = "20.00" }) })
    assert.outcome(run[1], "OK")
    assert.executed(run[1], "insert into customer_totals", 7, -1, "-12.50")
    assert.executed(run[1], "insert into customer_totals", 8, 1, "20.00")
  end)

  it("takes a deleted order out", function()
    consumer:answer("from order_totals_seen", { { customer_id = 7, amount = "12.50" } })
    local run = consumer:run({ order("DELETE", { id = 1, customer_id = 7, amount = "12.50" }) })
    assert.outcome(run[1], "OK")
    assert.executed(run[1], "insert into customer_totals", 7, -1, "-12.50")
    assert.executed(run[1], "delete from order_totals_seen where order_id = $1", 1)
    assert.are.equal(3, #run[1].sql)
  end)

  it("refuses rows of other tables", function()
    local run = consumer:run({ testing.jsontriga{ table = "public.other", row = { id = 1 } } })
    assert.outcome(run[1], "FAILED", "not an orders row: public.other")
  end)

  it("is an error for a payload that is not JSON", function()
    local run = consumer:run({ testing.event{ type = "{", data = "x", extra1 = "public.orders" } })
    assert.outcome(run[1], { outcome = "ERROR", error_match = "pgq%.json_decode: " })
  end)
end)

-- scripts/invoice_lines.lua: a consumer reusing an existing Lua model
-- (scripts/shop/pricing.lua), tested through the mock runner.
local testing = require "pgqlua.testing"

local function line(row, op)
  return testing.logutriga{ op = op or "I", table = "public.order_lines", pkey = "id", row = row }
end

describe("scripts/invoice_lines.lua", function()
  local consumer
  before_each(function()
    consumer = testing.load("scripts/invoice_lines.lua")
  end)

  it("prices a new line with the model and writes the invoice line", function()
    local run = consumer:run({
      line{ id = 1, order_id = 5, qty = 3, unit_cents = 1000, vat_class = "standard", discount_pct = 10 },
      line{ id = 2, order_id = 5, qty = 1, unit_cents = 999, vat_class = "reduced", discount_pct = testing.null },
    })
    assert.outcome(run[1], "OK")
    assert.executed(run[1], "insert into invoice_lines", 1, 5, 2700, 675)
    assert.executed(run[2], "insert into invoice_lines", 2, 5, 999, 120)
  end)

  it("ignores updates and deletes", function()
    local run = consumer:run({ line({ id = 1, qty = 1 }, "U"), line({ id = 1 }, "D") })
    assert.outcome(run[1], "OK")
    assert.sql(run, {})
  end)

  it("fails a line the model refuses, with the model's reason", function()
    local run = consumer:run({
      line{ id = 3, order_id = 5, qty = 0, unit_cents = 100, vat_class = "standard" },
      line{ id = 4, order_id = 5, qty = 1, unit_cents = 100, vat_class = "luxury" },
    })
    assert.outcome(run[1], "FAILED", "order line 3: quantity must be a positive whole number")
    assert.outcome(run[2], "FAILED", "order line 4: unknown VAT class luxury")
    assert.sql(run, {})
  end)

  it("uses the same model the application uses", function()
    package.path = "scripts/?.lua;" .. package.path
    local pricing = require "shop.pricing"
    assert.are.same({ 2700, 675 }, { pricing.line_total(3, 1000, "standard", 10) })
  end)
end)

-- scripts/audit_rows.lua through the mock batch runner.
local testing = require "pgqlua.testing"

describe("scripts/audit_rows.lua", function()
  local consumer
  before_each(function()
    consumer = testing.load("scripts/audit_rows.lua")
  end)

  it("audits an inserted row with its key and columns", function()
    local run = consumer:run({
      testing.logutriga{ id = 10, op = "I", table = "public.demo_customer", pkey = "id",
                         row = { id = 1, name = "Zoë", email = testing.null } },
    })
    assert.outcome(run[1], "OK")
    assert.executed(run[1], "insert into demo_audit", 10, "insert", "public.demo_customer", "1",
      '{"email":null,"id":"1","name":"Zoë"}')
  end)

  it("spells out updates and deletes, and joins a composite key", function()
    local run = consumer:run({
      testing.logutriga{ op = "U", table = "public.t", pkey = { "a", "b" }, row = { a = 1, b = 2 } },
      testing.logutriga{ op = "D", table = "public.t", pkey = "a", row = { a = testing.null } },
    })
    assert.outcome(run[1], "OK")
    assert.are.equal("update", run[1].sql[1].params[2])
    assert.are.equal("1,2", run[1].sql[1].params[4])
    assert.are.equal("delete", run[2].sql[1].params[2])
    assert.are.equal("NULL", run[2].sql[1].params[4])
  end)

  it("keeps a plain event's type and text", function()
    local run = consumer:run({ testing.event{ id = 3, type = "note", data = 'say "hi"' } })
    assert.outcome(run[1], "OK")
    assert.sql(run[1], {
      { "insert into demo_audit (ev_id, op, table_name, row_id, payload) values ($1, $2, $3, $4, $5::jsonb)",
        3, "note", testing.null, testing.null, '{"text":"say \\"hi\\""}' },
    })
  end)

  it("fails the poison event, writing nothing", function()
    local run = consumer:run({ testing.event{ type = "note", data = "poison" } })
    assert.outcome(run[1], "FAILED", "refusing poison event (the demo's example of a failed event)")
    assert.sql(run[1], {})
  end)

  it("is an error (retried) when the insert fails", function()
    consumer:answer("insert into demo_audit", testing.sql_error("42P01", 'relation "demo_audit" does not exist'))
    local run = consumer:run({ testing.event{ type = "note", data = "x" } })
    assert.outcome(run[1], "ERROR", 'audit_rows.lua:122: db:exec: 42P01 relation "demo_audit" does not exist')
    assert.are.equal("retry", run[1].action)
  end)
end)

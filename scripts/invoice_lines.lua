--- invoice_lines.lua - reuse an existing Lua model from a consumer.
--
-- Source: order_lines (id, order_id, qty, unit_cents, vat_class, discount_pct)
-- with pgq.logutriga('order_line_events').  For each new line the script
-- prices it with the application's own model, shop/pricing.lua beside this
-- script (require finds modules in the script's folder), and writes an
-- invoice line.  A line the model refuses is a poison event: it goes to
-- the failed-event table with the model's reason, and the rest flows on.
-- luacheck: globals process_event

local pricing = require "shop.pricing"

function process_event(ev, db)
  local op = ev.type:sub(1, 1)
  if op ~= "I" then
    return pgq.EVENT_OK        -- only new lines are invoiced
  end
  local line = pgq.urldecode(ev.data)
  local ok, net, vat = pcall(pricing.line_total, line.qty, line.unit_cents, line.vat_class,
    line.discount_pct ~= pgq.null and line.discount_pct or nil)
  if not ok then
    return pgq.EVENT_FAILED, "order line " .. line.id .. ": " .. tostring(net):gsub("^[^:]*:%d+: ", "")
  end
  db:exec("insert into invoice_lines (order_line_id, order_id, net_cents, vat_cents) values ($1, $2, $3, $4)",
    line.id, line.order_id, net, vat)
  return pgq.EVENT_OK
end

--- shop/pricing.lua - an application's existing pricing model: plain Lua,
-- no pgqlua in sight.  Consumer scripts reuse it with require "shop.pricing"
-- (the runtime's require looks in the script's own folder).
local M = {}

M.VAT = { standard = 0.25, reduced = 0.12, zero = 0 }

--- The price of a line in cents: quantity * unit price, less the discount
-- (percent), plus VAT of the rate's class.  Raises an error for a line
-- that cannot be priced.
function M.line_total(qty, unit_cents, vat_class, discount_pct)
  qty, unit_cents, discount_pct = tonumber(qty), tonumber(unit_cents), tonumber(discount_pct or 0)
  if not qty or qty <= 0 or math.type(qty) == "float" and qty ~= math.floor(qty) then
    error("quantity must be a positive whole number", 2)
  end
  if not unit_cents or unit_cents < 0 then error("unit price must be a number of cents >= 0", 2) end
  local rate = M.VAT[vat_class or "standard"]
  if not rate then error("unknown VAT class " .. tostring(vat_class), 2) end
  if not discount_pct or discount_pct < 0 or discount_pct > 100 then error("discount must be 0..100 %", 2) end
  local net = qty * unit_cents * (100 - discount_pct) / 100
  local vat = net * rate
  return math.floor(net + 0.5), math.floor(vat + 0.5)
end

return M

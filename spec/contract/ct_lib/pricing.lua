-- A module beside a contract script (found through the script's folder).
local M = {}

function M.with_vat(x)
  return x * 1.25
end

return M

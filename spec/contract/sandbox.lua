-- Contract fixture: what a script sees (sandbox, require, init's config).
-- See sandbox.yaml.
local pricing = require "ct_lib.pricing"
local same = require("pgqlua") == pgq
local conf

function init(config)
  conf = config
end

local function types(...)
  local t = {}
  for i = 1, select("#", ...) do t[i] = type((select(i, ...))) end
  return table.concat(t, ",")
end

function process_event(ev)
  if ev.type == "sandbox" then
    -- luacheck: ignore 113 143
    return pgq.EVENT_FAILED, types(io, debug, os.exit, os.execute, loadfile, dofile, package.loadlib, load,
      require, os.time, string.format, utf8.char, coroutine.wrap)
  elseif ev.type == "require" then
    local ok, err = pcall(load, "return 1", "x", "b")
    return pgq.EVENT_FAILED, table.concat({ tostring(same), pricing.with_vat(100), tostring(ok), err,
      package.cpath, tostring(require("ct_lib.pricing") == pricing) }, "|")
  elseif ev.type == "config" then
    return pgq.EVENT_FAILED, table.concat({ conf.max_retries, math.type(conf.max_retries), conf.retry_delay,
      math.type(conf.retry_delay), tostring(conf.db), conf.fetch_size, type(conf.queue_name) }, "|")
  elseif ev.type == "null" then
    return pgq.EVENT_FAILED, table.concat({ tostring(pgq.null), tostring(ev.extra4 == pgq.null),
      tostring(pgq.urldecode("a=1&b").b == pgq.null), math.type(pgq.json_decode('{"n": 3}').n) }, "|")
  end
end

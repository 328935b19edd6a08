--- Loaded by busted (see .busted) before any spec file.
-- `require "pgqlua"` needs a `pgqlua.host` module that the C runtime or the
-- mock runner normally lends it; specs get this fake, which records calls.
local host = { calls = {} }

--- Record one log call as { level = level, message = message }.
function host.log(level, message)
  host.calls[#host.calls + 1] = { level = level, message = message }
end

--- Load a file as a text chunk only, like the runtime's host.loadfile.
function host.loadfile(path)
  return loadfile(path, "t")
end

--- Forget the recorded calls.
function host.reset()
  for i = #host.calls, 1, -1 do host.calls[i] = nil end
end

package.preload["pgqlua.host"] = function() return host end

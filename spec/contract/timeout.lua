-- Contract fixture: event_timeout stops a loop, also one whose stop the
-- script catches with pcall and one inside a coroutine.  See timeout.yaml.
local function spin()
  while true do end
end

function process_event(ev)
  local t = ev.type
  if t == "loop" then
    while true do end
  elseif t == "pcall" then
    for _ = 1, 3 do pcall(spin) end
    return pgq.EVENT_OK
  elseif t == "coroutine" then
    coroutine.wrap(spin)()
  end
end

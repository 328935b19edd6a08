-- Contract fixture: with max_retries 0 a retry or an error sends the event
-- to the failed-event table at once.  See maxretries.yaml.
function process_event(ev)
  if ev.type == "retry" then
    return pgq.EVENT_RETRY
  elseif ev.type == "retry_delay" then
    return pgq.EVENT_RETRY, 5
  elseif ev.type == "error" then
    error("boom")
  elseif ev.type == "bad" then
    return "bad"
  end
end

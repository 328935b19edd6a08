-- Contract fixture: return values that are not results, and their error
-- texts (lbridge.c event_tramp).  See badreturn.yaml.
function process_event(ev)
  local t = ev.type
  if t == "string" then return "yes"
  elseif t == "float" then return 1.0
  elseif t == "numstring" then return "1"
  elseif t == "code" then return 7
  elseif t == "bool" then return true
  elseif t == "null" then return pgq.null
  elseif t == "delay_negative" then return pgq.EVENT_RETRY, -1
  elseif t == "delay_string" then return pgq.EVENT_RETRY, "5"
  elseif t == "delay_huge" then return pgq.EVENT_RETRY, 4e9
  elseif t == "delay_nil" then return pgq.EVENT_RETRY, nil
  elseif t == "reason_number" then return pgq.EVENT_FAILED, 5
  elseif t == "reason_table" then return pgq.EVENT_FAILED, {}
  elseif t == "reason_nil" then return pgq.EVENT_FAILED, nil, "ignored"
  elseif t == "ok_extra" then return pgq.EVENT_OK, "ignored"
  end
end

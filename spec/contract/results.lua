-- Contract fixture: every result of process_event, with SQL parameters of
-- every type.  Run by spec/contract_spec.lua (mock) and
-- tests/integration/t_contract.sh (the real runtime); see results.yaml.
function process_event(ev, db)
  local kind = ev.type
  if kind == "ok" then
    db:exec("insert into ct_results (k, a, b, c, d) values ($1, $2, $3, $4, $5)", ev.data, 42, 1.5, true, nil)
    return pgq.EVENT_OK
  elseif kind == "nothing" then
    db:exec("insert into ct_results (k, a, d) values ($1, $2, $3)", ev.data, 2.0, pgq.null)
    return
  elseif kind == "nil" then
    return nil
  elseif kind == "retry_delay" then
    return pgq.EVENT_RETRY, 2.5
  elseif kind == "retry" then
    db:exec("insert into ct_results (k) values ($1)", ev.data)
    return pgq.EVENT_RETRY
  elseif kind == "failed_reason" then
    db:exec("insert into ct_results (k) values ($1)", ev.data)
    return pgq.EVENT_FAILED, "bad: " .. ev.data
  elseif kind == "failed" then
    return pgq.EVENT_FAILED
  elseif kind == "error" then
    error("boom: " .. ev.data)
  elseif kind == "error_table" then
    error({})
  elseif kind == "error_level0" then
    error("no position\nsecond line", 0)
  elseif kind == "extras" then
    db:exec("insert into ct_results (k, e) values ($1, $2)", ev.data,
      table.concat({ ev.extra1, tostring(ev.extra2 == pgq.null), math.type(ev.retry), ev.retry,
                     math.type(ev.id), type(ev.time) }, ","))
  elseif kind == "text" then
    db:exec("insert into ct_results (k, e) values ($1, $2)", ev.data, "line1\nline2 \"q\" 'x' \\ é\t%")
  end
end

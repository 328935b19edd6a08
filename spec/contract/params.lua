-- Contract fixture: parameters of db:exec and db:send, as text and as
-- refusals (the same words from both, each naming itself).  See
-- params.yaml and params.sql.
function process_event(ev, db)
  local t = ev.type
  if t == "kinds_exec" then
    db:exec("insert into ct_param values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
      7, 2.0, 2.5, 1e20, -0.125, true, false, nil, pgq.null)
  elseif t == "kinds_send" then
    db:send("insert into ct_param values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
      -7, 3.0, 0.1, 2^63, "x", false, true, pgq.null, nil)
  elseif t == "exec_table" then
    db:exec("insert into ct_param (a) values ($1)", {})
  elseif t == "send_table" then
    db:send("insert into ct_param (a) values ($1)", "ok", {})
  elseif t == "exec_nul" then
    db:exec("insert into ct_param (a) values ($1)", "a\0b")
  elseif t == "send_nul" then
    db:send("insert into ct_param (a) values ($1)", "a\0b")
  elseif t == "send_function" then
    db:send("insert into ct_param (a) values ($1)", print)
  end
end

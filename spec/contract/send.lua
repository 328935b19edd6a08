-- Contract fixture: db:send.  A send that fails shows at the event's next
-- db:exec, which raises; the event's writes (its sends before the failed
-- one too) are undone and the event is an error; other events' sends are
-- kept.  See send.yaml and send.sql.
function process_event(ev, db)
  local t = ev.type
  if t == "write" then
    db:send("insert into ct_send values ($1)", ev.data)
  elseif t == "fail" then
    db:send("insert into ct_send values ($1)", ev.data)
    db:send("insert into ct_send_nope values ($1)", ev.data)
    db:exec("select 1")
  elseif t == "swallow" then
    db:send("insert into ct_send values ($1)", ev.data)
    db:send("insert into ct_send_nope values ($1)", ev.data)
    pcall(db.exec, db, "select 1")
    return pgq.EVENT_OK
  elseif t == "kept" then
    local rows = db:exec("select string_agg(v, ',' order by v) as v from ct_send")
    return pgq.EVENT_FAILED, "kept: " .. rows[1].v
  end
end

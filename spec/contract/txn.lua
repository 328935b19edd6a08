-- Contract fixture: transaction control is refused by db:exec and db:send
-- before it reaches the server.  See txn.yaml.
function process_event(ev, db)
  local t = ev.type
  if t == "exec_commit" then
    db:exec("commit")
  elseif t == "send_rollback" then
    db:send("  -- undo\n  ROLLBACK")
  elseif t == "exec_savepoint" then
    db:exec("/* x */ savepoint s1")
  elseif t == "send_prepare" then
    db:send("prepare transaction 'x'")
  elseif t == "swallow_send" then
    pcall(db.send, db, "begin")
    return pgq.EVENT_OK
  elseif t == "swallow_exec" then
    pcall(db.exec, db, "end")
    return pgq.EVENT_OK
  end
end

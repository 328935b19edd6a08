-- Contract fixture: SQL errors, db:exec's parameter checks, reading rows.
-- See sqlerror.yaml and sqlerror.sql.
function process_event(ev, db)
  local t = ev.type
  if t == "swallow" then
    pcall(db.exec, db, "insert into ct_nope values ($1)", ev.data)
    return pgq.EVENT_OK
  elseif t == "raise" then
    db:exec("insert into ct_nope values ($1)", ev.data)
  elseif t == "again" then
    pcall(db.exec, db, "insert into ct_nope values ($1)", ev.data)
    db:exec("insert into ct_sql values ($1)", ev.data)
  elseif t == "param" then
    db:exec("insert into ct_sql values ($1)", {})
  elseif t == "nul" then
    db:exec("insert into ct_sql values ($1)", "a\0b")
  elseif t == "read" then
    local rows, n = db:exec("select v, n, f, b, z from ct_sql_data where k = $1 order by n", ev.data)
    local r = rows[1]
    return pgq.EVENT_FAILED, string.format("%d %s %s %s %s %s %s", n, r.v, math.type(r.n), math.type(r.f),
      tostring(r.b), tostring(r.z == pgq.null), rows[2].v)
  elseif t == "count" then
    local _, n = db:exec("update ct_sql_data set v = v where k = $1", ev.data)
    return pgq.EVENT_FAILED, "updated " .. n
  end
end

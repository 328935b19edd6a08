-- Contract fixture: batch hooks with SQL, then ABORT_BATCH: the events
-- after it are not run and on_batch_end is not called.  See hooks.yaml.
local seen = 0

function on_batch_start(batch, db)
  seen = 0
  db:exec("select $1::int as n, $2::text as t", 1, type(batch.id))
end

function process_event(ev, db)
  seen = seen + 1
  db:exec("insert into ct_hooks values ($1, $2)", ev.data, seen)
  if ev.type == "abort" then
    return pgq.ABORT_BATCH
  end
end

function on_batch_end(_, db)
  db:exec("insert into ct_hooks values ($1, $2)", "end", seen)
end

-- Contract fixture: on_batch_end runs after the last event.  See hooks_end.yaml.
local seen = 0

function on_batch_start()
  seen = 0
end

function process_event(ev, db)
  seen = seen + 1
  db:exec("insert into ct_hooks_end values ($1, $2)", ev.data, seen)
end

function on_batch_end(_, db)
  db:exec("insert into ct_hooks_end values ($1, $2)", "end", seen)
end

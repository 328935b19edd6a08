--- audit_rows.lua - a pgqlua consumer that writes an audit trail of table changes.
--
-- How the events get into the queue (PgQ in two paragraphs):
--   A PgQ queue lives inside PostgreSQL. Producers add events to it inside
--   their own transactions, so an event exists exactly when the transaction
--   that wrote it commits. The ticker (pgqd) periodically cuts the stream
--   into batches; a consumer (here: pgqlua running this script) takes one
--   batch at a time and the runtime calls process_event() once per event.
--
--   pgq ships a trigger, pgq.logutriga, that turns row changes into events:
--       create trigger demo_customer_audit
--           after insert or update or delete on demo_customer
--           for each row execute procedure pgq.logutriga('demo_events');
--   Each changed row becomes one event with
--       ev.type   = "I:id", "U:id" or "D:id": the operation (Insert, Update,
--                   Delete), then the primary key column(s), comma separated
--       ev.extra1 = the table, schema-qualified ("public.demo_customer")
--       ev.data   = the row, urlencoded: "id=1&name=Zo%c3%ab&email"
--                   (after an update: the new row; after a delete: the old
--                   one; a column without "=" is SQL NULL)
--   Anyone can also add plain events with SQL:
--       select pgq.insert_event('demo_events', 'note', 'some text');
--   Those have the type and data the caller chose and extra1..4 SQL NULL.
--
-- What this script does with them: one row in demo_audit per event,
--   ev_id      bigint primary key  -- ev.id, unique within the queue
--   op         text                -- insert / update / delete, or the plain event's type
--   table_name text                -- ev.extra1 for row events
--   row_id     text                -- the primary key value(s) of the changed row
--   payload    jsonb               -- the row's columns, or {"text": ...} for a plain event
-- An event whose data is "poison" is refused with pgq.EVENT_FAILED: the
-- runtime then moves it to its failed-event table (pgqlua.failed_event),
-- see `pgqlua failed list|retry|delete CONFIG`.
--
-- The runtime runs every batch in one transaction: the inserts made through
-- db:exec and PgQ's "batch finished" mark commit together, so each event is
-- audited exactly once even if the consumer crashes half-way through.
--
-- Globals: the runtime provides `pgq` (result codes, pgq.null, pgq.log,
-- pgq.urldecode) and calls the global function process_event(ev, db).
-- luacheck: read globals pgq
-- luacheck: globals process_event

-- "I" / "U" / "D" in a logutriga ev.type, spelled out for the audit table.
local OPS = { I = "insert", U = "update", D = "delete" }

-- JSON string escapes for the characters JSON does not allow raw.
local JSON_ESCAPES = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}

--- A Lua value as JSON: strings are quoted and escaped, pgq.null is null.
local function json_value(v)
  if v == pgq.null then
    return "null"
  end
  local escaped = tostring(v):gsub('[%c"\\]', function(c)
    return JSON_ESCAPES[c] or string.format("\\u%04x", c:byte())
  end)
  return '"' .. escaped .. '"'
end

--- A flat table of strings as a JSON object, keys sorted for stable output.
local function json_object(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do
    parts[i] = json_value(k) .. ":" .. json_value(t[k])
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

--- Split a logutriga ev.type "U:id" (or "U:a,b") into "U" and {"id"}.
-- Returns nil for anything else, i.e. for plain events.
local function parse_row_type(ev_type)
  if ev_type == pgq.null then
    return nil
  end
  local op, pkeys = ev_type:match("^([IUD]):(.*)$")
  if not op then
    return nil
  end
  local cols = {}
  for col in pkeys:gmatch("[^,]+") do cols[#cols + 1] = col end
  return op, cols
end

local INSERT_SQL = [[
  insert into demo_audit (ev_id, op, table_name, row_id, payload)
  values ($1, $2, $3, $4, $5::jsonb)]]

--- Called by the runtime once per event, inside the batch's transaction.
-- ev: id, time, txid, retry, type, data, extra1..extra4 (SQL NULL = pgq.null)
-- db: db:exec(sql, p1, ...) runs SQL with $1.. placeholders in that transaction.
-- Returns pgq.EVENT_OK (or nothing), pgq.EVENT_RETRY [, seconds],
-- pgq.EVENT_FAILED [, reason] or pgq.ABORT_BATCH. A Lua error counts as a
-- retry: the event comes back later, and after max_retries it is failed.
function process_event(ev, db)
  -- The demo's deliberately bad event: refuse it, with a reason that
  -- `pgqlua failed list` shows next to it.
  if ev.data == "poison" then
    return pgq.EVENT_FAILED, "refusing poison event (the demo's example of a failed event)"
  end

  local op, pkey_cols = parse_row_type(ev.type)
  if op and ev.extra1 ~= pgq.null then
    -- A row change captured by pgq.logutriga.
    local row = pgq.urldecode(ev.data)
    local ids = {}
    for i, col in ipairs(pkey_cols) do
      local v = row[col]
      ids[i] = (v == nil or v == pgq.null) and "NULL" or v
    end
    db:exec(INSERT_SQL, ev.id, OPS[op], ev.extra1, table.concat(ids, ","), json_object(row))
    pgq.log.debug("event %d: %s %s id=%s", ev.id, OPS[op], ev.extra1, table.concat(ids, ","))
  else
    -- A plain event from pgq.insert_event: keep its type and text.
    -- (ev.data may be SQL NULL, pgq.null: json_object writes it as null.)
    db:exec(INSERT_SQL, ev.id, ev.type, pgq.null, pgq.null, json_object({ text = ev.data }))
    pgq.log.info("event %d: plain event of type %s", ev.id, tostring(ev.type))
  end
  return pgq.EVENT_OK
end

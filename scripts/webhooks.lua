--- webhooks.lua - post each order row change to a webhook.
--
-- Source: a table `orders` with
--     create trigger orders_webhook after insert or update or delete on orders
--         for each row execute procedure pgq.jsontriga('order_events');
-- Each change is one event (ev.type JSON {"op":"INSERT","table":["public","orders"],"pkey":["id"]},
-- ev.extra1 "public.orders", ev.data the row as JSON) and one POST of
--     {"event": "order.insert", "id": 7, "order": {...the row...}, "event_id": 123, "time": "..."}
-- to the webhook.  Its URL comes from the consumer's environment, which
-- the config lets the script read:
--     env_allow: [WEBHOOK_URL, WEBHOOK_TOKEN]    # WEBHOOK_TOKEN optional: Authorization: Bearer ...
--
-- pgq.http.send posts without waiting: the next events go on while up to
-- http_concurrency posts are in flight, and the runtime settles each
-- event by its response: a 2xx is done; 408, 429, 5xx and transport
-- errors retry it (after Retry-After when the receiver sends one), then
-- fail it after max_retries; any other status fails it with the status
-- and the body.  Every post carries Idempotency-Key: QUEUE/CONSUMER/EVENT_ID,
-- the same on every delivery of the event, so the receiver can drop the
-- repeat a crash before the batch's commit causes.
-- luacheck: globals process_event init

local url, token

local OPS = { INSERT = "insert", UPDATE = "update", DELETE = "delete" }

function init()
  url = os.getenv("WEBHOOK_URL")
  if url == nil or url == "" then
    error("webhooks.lua: no webhook URL: set WEBHOOK_URL and list it in env_allow", 0)
  end
  token = os.getenv("WEBHOOK_TOKEN")
end

function process_event(ev)
  if ev.extra1 ~= "public.orders" then
    return pgq.EVENT_FAILED, "not an orders row: " .. tostring(ev.extra1)
  end
  local ok, kind = pcall(pgq.json_decode, ev.type)
  local op = ok and type(kind) == "table" and OPS[kind.op]
  if not op then return pgq.EVENT_FAILED, "not a pgq.jsontriga event: " .. tostring(ev.type) end
  local rok, row = pcall(pgq.json_decode, ev.data)
  if not rok or type(row) ~= "table" then return pgq.EVENT_FAILED, "the row is not a JSON object" end
  pgq.http.send{
    url = url,
    json = { event = "order." .. op, id = row.id, order = row, event_id = ev.id, time = ev.time },
    headers = token and { Authorization = "Bearer " .. token } or nil,
  }
end

--- payments.lua - retry on a transient condition, fail poison events.
--
-- Plain events from the payment gateway's writer:
--     select pgq.insert_event('payment_events', 'payment', '{"order_id": 7, "cents": 1250}');
-- Each one is booked against its order: a row in payments, orders.paid_cents
-- raised.  Three ways it can go:
--   * poison: data that is not JSON, misses a field, or has cents <= 0.
--     Retrying cannot help, so pgq.EVENT_FAILED with the reason; it waits
--     in pgqlua.failed_event for a human (`pgqlua failed list|retry|delete`).
--   * transient: the order is not there yet (its writer commits later), or
--     the order row is locked by someone else (select ... for update nowait
--     fails with SQLSTATE 55P03).  pgq.EVENT_RETRY: PgQ brings the event back
--     after retry_delay; after max_retries it is failed by the runtime.
--   * otherwise booked, pgq.EVENT_OK.
-- luacheck: globals process_event init

local retry_delay

function init(config)
  -- a locked row clears fast; a missing order may take a while
  retry_delay = math.min(config.retry_delay, 5)
end

local function poison(ev, why)
  return pgq.EVENT_FAILED, string.format("payment event %d: %s", ev.id, why)
end

function process_event(ev, db)
  if ev.type ~= "payment" then
    return poison(ev, "unknown event type " .. tostring(ev.type))
  end
  local ok, p = pcall(pgq.json_decode, ev.data)
  if not ok then return poison(ev, "data is not JSON") end
  if type(p) ~= "table" or math.type(p.order_id) ~= "integer" or math.type(p.cents) ~= "integer" then
    return poison(ev, "expected {\"order_id\": integer, \"cents\": integer}")
  end
  if p.cents <= 0 then return poison(ev, "cents must be positive, got " .. p.cents) end

  local found, rows = pcall(db.exec, db, "select id from orders where id = $1 for update nowait", p.order_id)
  if not found then
    if tostring(rows):find("55P03", 1, true) then
      pgq.log.info("order %d is locked; payment event %d retries", p.order_id, ev.id)
      return pgq.EVENT_RETRY, retry_delay
    end
    error(rows, 0)             -- anything else is a real error
  end
  if #rows == 0 then
    pgq.log.warn("order %d not there yet (retry %d); payment event %d retries", p.order_id, ev.retry, ev.id)
    return pgq.EVENT_RETRY
  end
  db:exec("insert into payments (ev_id, order_id, cents) values ($1, $2, $3)", ev.id, p.order_id, p.cents)
  db:exec("update orders set paid_cents = paid_cents + $2 where id = $1", p.order_id, p.cents)
  return pgq.EVENT_OK
end

--- order_totals.lua - keep a summary table up to date from pgq.jsontriga rows.
--
-- Source: a table `orders (id, customer_id, amount numeric)` with
--     create trigger orders_totals after insert or update or delete on orders
--         for each row execute procedure pgq.jsontriga('order_events');
-- Each change is one event: ev.type is JSON {"op":"INSERT","table":["public","orders"],"pkey":["id"]},
-- ev.extra1 "public.orders", ev.data the row as JSON (numeric columns as strings).
--
-- Target: customer_totals (customer_id primary key, orders int, amount numeric),
-- kept by upserts.  pgq.jsontriga sends only the new row of an UPDATE, so
-- the script keeps what it last counted for each order in
-- order_totals_seen (order_id primary key, customer_id, amount) and takes
-- that back out first: an update that moves an order to another customer,
-- or changes its amount, keeps both customers right.  Replaying an event
-- is harmless.
-- luacheck: globals process_event

local ADD = [[
insert into customer_totals (customer_id, orders, amount) values ($1, $2, $3::numeric)
on conflict (customer_id) do update
  set orders = customer_totals.orders + excluded.orders,
      amount = customer_totals.amount + excluded.amount]]

local REMEMBER = [[
insert into order_totals_seen (order_id, customer_id, amount) values ($1, $2, $3::numeric)
on conflict (order_id) do update set customer_id = excluded.customer_id, amount = excluded.amount]]

function process_event(ev, db)
  if ev.extra1 ~= "public.orders" then
    return pgq.EVENT_FAILED, "not an orders row: " .. tostring(ev.extra1)
  end
  local op = pgq.json_decode(ev.type).op
  local row = pgq.json_decode(ev.data)

  -- take out what this order counted for until now
  local seen = db:exec("select customer_id, amount from order_totals_seen where order_id = $1", row.id)[1]
  if seen then
    db:exec(ADD, seen.customer_id, -1, "-" .. seen.amount)
  end

  if op == "DELETE" then
    db:exec("delete from order_totals_seen where order_id = $1", row.id)
  else
    db:exec(ADD, row.customer_id, 1, row.amount)
    db:exec(REMEMBER, row.id, row.customer_id, row.amount)
  end
  return pgq.EVENT_OK
end

#!/usr/bin/env bash
# The example consumers in scripts/ under the real runtime, their effects
# checked in SQL, and `pgqlua test` on an example's events file.
source "$(dirname "$0")/lib.sh"
reset_queues q_ex_audit q_ex_totals q_ex_invoice q_ex_pay

# example_consumer QUEUE CONSUMER SCRIPT [EXTRA_YAML]: a config for scripts/SCRIPT
example_consumer() {
	{
		echo "queue_name: $1"
		echo "consumer_name: $2"
		echo "db: \"host=$PGHOST port=$PGPORT user=$PGUSER dbname=pgqlua_test\""
		echo "script: $ROOT/scripts/$3"
		echo "loop_delay: 0.05"
		echo "log_level: debug"
		echo "${4:-}"
	} > "$WORK/$2.yaml"
	"$PGQLUA" install "$WORK/$2.yaml" > "$WORK/$2.install.out"
	sql "select pgq.set_queue_config('$1', 'ticker_max_lag', '0.05'),
	            pgq.set_queue_config('$1', 'ticker_idle_period', '0.2')" > /dev/null
}

sql "drop table if exists demo_audit, ex_customer, orders, customer_totals, order_totals_seen,
                          order_lines, invoice_lines, payments cascade;
     create table demo_audit (ev_id bigint primary key, op text, table_name text, row_id text, payload jsonb);
     create table ex_customer (id int primary key, name text, email text);
     create table orders (id int primary key, customer_id int, amount numeric, paid_cents int not null default 0);
     create table customer_totals (customer_id int primary key, orders int not null, amount numeric not null);
     create table order_totals_seen (order_id int primary key, customer_id int, amount numeric);
     create table order_lines (id int primary key, order_id int, qty int, unit_cents int, vat_class text,
                               discount_pct numeric);
     create table invoice_lines (order_line_id int primary key, order_id int, net_cents int, vat_cents int);
     create table payments (ev_id bigint primary key, order_id int, cents int);"

# ---- audit_rows.lua: logutriga rows and plain events into demo_audit
example_consumer q_ex_audit c_ex_audit audit_rows.lua
sql "create trigger ex_audit after insert or update or delete on ex_customer
     for each row execute procedure pgq.logutriga('q_ex_audit');
     insert into ex_customer values (1, 'Zoë', null);
     update ex_customer set email = 'z@example.com' where id = 1;
     select pgq.insert_event('q_ex_audit', 'note', 'poison');" > /dev/null
drain q_ex_audit c_ex_audit || fail "q_ex_audit did not drain"
expect_eq "audit_rows.lua audits inserts and updates with the row" \
	'insert|1|{"id": "1", "name": "Zoë", "email": null}
update|1|{"id": "1", "name": "Zoë", "email": "z@example.com"}' \
	"$(sql "select op || '|' || row_id || '|' || payload from demo_audit order by ev_id")"
expect_eq "audit_rows.lua fails the poison event" "refusing poison event (the demo's example of a failed event)" \
	"$(sql "select reason from pgqlua.failed_event where consumer_name = 'c_ex_audit'")"

# ---- order_totals.lua: jsontriga rows kept as per-customer totals
example_consumer q_ex_totals c_ex_totals order_totals.lua
sql "create trigger ex_totals after insert or update or delete on orders
     for each row execute procedure pgq.jsontriga('q_ex_totals');
     insert into orders (id, customer_id, amount) values (1, 7, 12.50), (2, 7, 5), (3, 8, 1.25);
     update orders set customer_id = 8, amount = 20 where id = 2;
     delete from orders where id = 1;
     insert into orders (id, customer_id, amount) values (4, 7, 3.10);" > /dev/null
drain q_ex_totals c_ex_totals || fail "q_ex_totals did not drain"
expect_eq "order_totals.lua keeps customer_totals equal to the orders table" \
	"$(sql "select string_agg(customer_id || ':' || n || ':' || s, ',' order by customer_id)
	        from (select customer_id, count(*) n, sum(amount) s from orders group by 1) x")" \
	"$(sql "select string_agg(customer_id || ':' || orders || ':' || amount, ',' order by customer_id)
	        from customer_totals where orders > 0")"

# ---- invoice_lines.lua: a Lua model beside the script prices each line
example_consumer q_ex_invoice c_ex_invoice invoice_lines.lua
sql "create trigger ex_invoice after insert or update or delete on order_lines
     for each row execute procedure pgq.logutriga('q_ex_invoice');
     insert into order_lines values (1, 5, 3, 1000, 'standard', 10), (2, 5, 1, 999, 'reduced', null),
                                    (3, 5, 0, 100, 'standard', null);
     update order_lines set qty = 4 where id = 1;" > /dev/null
drain q_ex_invoice c_ex_invoice || fail "q_ex_invoice did not drain"
expect_eq "invoice_lines.lua prices lines with shop/pricing.lua" "1:2700:675,2:999:120" \
	"$(sql "select string_agg(order_line_id || ':' || net_cents || ':' || vat_cents, ',' order by 1) from invoice_lines")"
expect_eq "invoice_lines.lua fails the line the model refuses, with its reason" \
	"order line 3: quantity must be a positive whole number" \
	"$(sql "select reason from pgqlua.failed_event where consumer_name = 'c_ex_invoice'")"

# ---- payments.lua: retries while the order is missing, fails poison
example_consumer q_ex_pay c_ex_pay payments.lua "retry_delay: 0.2
max_retries: 1000"
sql "insert into orders (id, customer_id, amount) values (10, 1, 1);
     select pgq.insert_event('q_ex_pay', 'payment', '{\"order_id\": 10, \"cents\": 100}');
     select pgq.insert_event('q_ex_pay', 'payment', '{\"order_id\": 11, \"cents\": 250}');
     select pgq.insert_event('q_ex_pay', 'payment', '{\"order_id\": 10, \"cents\": -5}');" > /dev/null
wait_until 30 ticked q_ex_pay || fail "q_ex_pay never ticked"
for _ in 1 2 3; do run_once c_ex_pay || true; done
expect_eq "payments.lua books the payment whose order exists" "10:100" \
	"$(sql "select string_agg(order_id || ':' || cents, ',') from payments")"
expect_match "payments.lua retries the payment whose order is not there yet" \
	"order 11 not there yet \(retry [0-9]+\); payment event [0-9]+ retries" "$(cat "$WORK/c_ex_pay.log")"
sql "insert into orders (id, customer_id, amount) values (11, 1, 1)" > /dev/null
drain q_ex_pay c_ex_pay || fail "q_ex_pay did not drain"
expect_eq "once the order is there the retried payment is booked" "10:100,11:250" \
	"$(sql "select string_agg(order_id || ':' || cents, ',' order by order_id) from payments")"
expect_eq "orders.paid_cents follows" "10:100,11:250" \
	"$(sql "select string_agg(id || ':' || paid_cents, ',' order by id) from orders where id in (10, 11)")"
expect_match "payments.lua fails the poison payment with its reason" \
	"^payment event [0-9]+: cents must be positive, got -5$" \
	"$(sql "select reason from pgqlua.failed_event where consumer_name = 'c_ex_pay'")"

# ---- pgqlua test: the example's events file passes; a wrong expectation fails
set +e
out=$("$PGQLUA" test "$ROOT/scripts/payments.lua" "$ROOT/scripts/payments.events.yaml" 2>&1)
rc=$?
set -e
expect_eq "pgqlua test passes scripts/payments.events.yaml" "0" "$rc"
[ "$rc" == 0 ] || echo "$out"
expect_match "pgqlua test prints each outcome, the SQL and a summary" \
	'event 1 \(payment\): OK.*db:exec select id from orders where id = \$1 for update nowait \["7"\].*3 events: 1 OK, 2 FAILED; all as expected' \
	"$(echo $out)"
set +e
out=$("$PGQLUA" test "$ROOT/scripts/payments.lua" --event '{"type":"payment","data":"{}","expect":"OK"}' 2>&1)
rc=$?
set -e
expect_eq "pgqlua test exits 1 when an event does not end as expected" "1" "$rc"
expect_match "and says why" 'NOT AS EXPECTED: expected OK, got FAILED reason=payment event 1: expected' "$out"
finish

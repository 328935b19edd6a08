/*
 * floor.c - the protocol floor for bench/run.sh: the cheapest PgQ consumer
 * there is.  For each batch: pgq.next_batch, every event of the batch in
 * one round trip (pgq.get_batch_events, each value touched once), then
 * pgq.finish_batch.  No Lua, no per-event work.  Exits when next_batch
 * returns NULL (nothing ready).
 *
 *   floor CONNINFO QUEUE CONSUMER
 * Prints "EVENTS BATCHES" on stdout.  Built by bench/run.sh with
 *   cc -O2 floor.c $(pkg-config --cflags --libs libpq)
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static PGresult *exec(PGconn *c, const char *sql, int n, const char *const *p)
{
	PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
		fprintf(stderr, "floor: %s: %s", sql, PQerrorMessage(c));
		exit(1);
	}
	return r;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: floor CONNINFO QUEUE CONSUMER\n");
		return 64;
	}
	PGconn *c = PQconnectdb(argv[1]);
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "floor: %s", PQerrorMessage(c));
		return 69;
	}
	const char *qc[2] = {argv[2], argv[3]};
	long long events = 0, batches = 0;
	size_t bytes = 0;
	for (;;) {
		PGresult *r = exec(c, "select pgq.next_batch($1, $2)", 2, qc);
		if (PQgetisnull(r, 0, 0)) {
			PQclear(r);
			break;
		}
		char id[32];
		snprintf(id, sizeof(id), "%s", PQgetvalue(r, 0, 0));
		PQclear(r);
		const char *p[1] = {id};
		r = exec(c,
		         "select ev_id, ev_time, ev_txid, ev_retry, ev_type, ev_data,"
		         " ev_extra1, ev_extra2, ev_extra3, ev_extra4 from pgq.get_batch_events($1)",
		         1, p);
		int rows = PQntuples(r), cols = PQnfields(r);
		for (int i = 0; i < rows; i++)
			for (int j = 0; j < cols; j++)
				bytes += strlen(PQgetvalue(r, i, j));
		events += rows;
		PQclear(r);
		PQclear(exec(c, "select pgq.finish_batch($1)", 1, p));
		batches++;
	}
	printf("%lld %lld %zu\n", events, batches, bytes);
	PQfinish(c);
	return 0;
}

/*
 * embed_example.c - the smallest program that embeds libpgqlua: open a
 * consumer from a config, process batches until the queue is drained,
 * close.  The integration tests build and run it.
 */
#include <pgqlua.h>
#include <stdio.h>

int main(int argc, char **argv)
{
	char err[1024];
	pgqlua_consumer *c;
	pgqlua_status st;
	int batches = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: embed_example CONFIG\n");
		return 64;
	}
	st = pgqlua_open(argv[1], &c, err, sizeof(err));
	if (st != PGQLUA_OK) {
		fprintf(stderr, "embed_example: %s\n", err);
		return 1;
	}
	while ((st = pgqlua_run_batch(c)) == PGQLUA_OK)
		batches++;
	pgqlua_close(c);
	printf("embed_example: %d batches, last status: %s\n", batches, pgqlua_status_str(st));
	return st == PGQLUA_NO_BATCH ? 0 : 1;
}

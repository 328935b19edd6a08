/*
 * seek.h - `pgqlua seek` moves a stopped consumer's position on its queue
 * (back to replay events, forward to skip them) and `pgqlua peek` shows the
 * next events it would get.  Called by cli.c.
 */
#ifndef PGQLUA_SEEK_H
#define PGQLUA_SEEK_H

#include "config.h"
#include "pgconn.h"
#include <stdio.h>

typedef enum seek_to {
	SEEK_TICK = 0,     /* a tick id */
	SEEK_TIME,         /* the last tick at or before a timestamp */
	SEEK_LATEST        /* the queue's newest tick: skip everything */
} seek_to;

/* Move cfg's consumer on connection c (opened on cfg->db) to the tick that
 * `to` and `arg` name, in one transaction that holds the consumer's claim
 * and locks the queue against rotation.  Prints the old and new tick and
 * how many events will be replayed or skipped; skipping events needs
 * `yes`.  Refuses a tick PgQ no longer keeps.  Returns an exit code. */
int seek_consumer(pgconn *c, const config *cfg, seek_to to, const char *arg, int yes, FILE *out);

/* Print the next `limit` events cfg's consumer would get (id, time, type,
 * extra1, the start of data; JSON lines with `json`), read through PgQ's
 * own batch functions in a transaction that is rolled back.  Returns an
 * exit code. */
int seek_peek(pgconn *c, const config *cfg, int limit, int json, FILE *out);

#endif

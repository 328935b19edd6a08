/*
 * seek.h - `pgqlua seek` moves a stopped consumer's position on its queue
 * (every partition's, for a consumer group), back to replay events or
 * forward to skip them.  Called by cli.c.
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

/* Move cfg's consumer on connection c (opened on cfg->db), or every
 * partition of its group, to the tick that `to` and `arg` name, in one
 * transaction that holds the claims of all of them (refused, EXIT_RUNNING,
 * while a member holds one) and locks the queue against rotation.  Prints
 * the old and new tick (each partition's) and how many events will be
 * replayed or skipped; skipping events needs `yes`.  Refuses a tick PgQ no
 * longer keeps.  Returns an exit code. */
int seek_consumer(pgconn *c, const config *cfg, seek_to to, const char *arg, int yes, FILE *out);

#endif

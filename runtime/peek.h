/*
 * peek.h - `pgqlua peek` shows the next events a consumer would get, or
 * for a consumer group each partition's next events.  Called by cli.c.
 */
#ifndef PGQLUA_PEEK_H
#define PGQLUA_PEEK_H

#include "config.h"
#include "pgconn.h"
#include <stdio.h>

/* Print the next `limit` events cfg's consumer would get (id, time, type,
 * extra1, the start of data; JSON lines with `json`), through its filter,
 * read with PgQ's own batch functions in a transaction that is rolled
 * back.  A group shows each partition in turn, up to `limit` events each
 * (a header line per partition; a "partition" member in JSON).  Returns an
 * exit code. */
int peek_show(pgconn *c, const config *cfg, int limit, int json, FILE *out);

#endif

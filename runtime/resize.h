/*
 * resize.h - `pgqlua resize CONFIG M` (resize.c): moves a consumer group
 * from its N partitions to M with nothing lost or doubled, while
 * producers insert and members run.  Called by cli_db.c.
 */
#ifndef PGQLUA_RESIZE_H
#define PGQLUA_RESIZE_H

#include "config.h"
#include "pgconn.h"

#include <stdio.h>

/* Resize cfg's group to `to` partitions, waiting up to timeout seconds
 * for the partitions to catch up (twice: before the ticker is paused and
 * while it is).  The steps: let every partition catch up with the latest
 * tick; pause the queue's ticker; let every partition finish the last
 * tick T; then in one transaction register the M new partitions at T,
 * give the old partitions' retried events (waiting in pgq.retry_queue or
 * already back in the queue after T) and failed events to the new
 * partition of their key, unregister the old partitions and record M in
 * pgqlua.group_layout, where members read it between batches; resume the
 * ticker (also after an error or a stop signal).  An interrupted resize
 * is completed by running it again.  Progress and the time ticks were
 * paused go to out.  Returns the exit code (exitcode.h). */
int resize_group(pgconn *c, config *cfg, int to, double timeout, FILE *out);

#endif

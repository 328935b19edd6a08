/*
 * batch.h - one batch, from its cursor to its commit (batch.c).  Called by
 * the run loop (loop.c) with a batch that pgq.next_batch returned.
 */
#ifndef PGQLUA_BATCH_H
#define PGQLUA_BATCH_H

#include "consumer_state.h"

/* Process batch b in one transaction and finish it, reading the next
 * batch with the commit (c->next, c->next_known).  PGQLUA_OK when
 * committed; PGQLUA_BATCH_ABORTED when rolled back on purpose (ABORT_BATCH,
 * a failed hook, an immediate stop); PGQLUA_ERR_DB when rolled back (or its
 * commit's outcome is unknown) after a database failure. */
pgqlua_status batch_run(pgqlua_consumer *c, const pgq_batch *b);

#endif

/*
 * joint.h - a member of a local group that holds several partitions runs
 * their batches together (joint.c): their next batches in one statement,
 * then those at the lead's ticks (the earliest any of them has) as one
 * joint batch: one cursor reads the events of all of them, each row with
 * its partition, the script sees them in ev_id order, every retry and
 * failed event goes to the event's own partition, and one commit finishes
 * every batch.  A partition behind the others runs alone until it has
 * caught up.  Called by the run loop (loop.c) between batches.
 */
#ifndef PGQLUA_JOINT_H
#define PGQLUA_JOINT_H

#include "consumer_state.h"

/* The next joint batch of the n partitions held (their numbers in idx),
 * through batch.c: PGQLUA_OK, PGQLUA_NO_BATCH when none has a batch, or
 * what batch_run returned. */
pgqlua_status joint_run(pgqlua_consumer *c, consumer_part **held, const int *idx, int n);

#endif

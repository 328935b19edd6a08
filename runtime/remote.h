/*
 * remote.h - batch tracking in a remote consumer's target database (schema
 * pgqlua there): the last batch whose work the target committed, and the
 * per-event outcomes the source still has to apply (retries, failed rows),
 * so that a crash between the target's COMMIT and the source's is repaired
 * on the next start without running the script again.  Called by consumer.c
 * and cli.c (install).
 */
#ifndef PGQLUA_REMOTE_H
#define PGQLUA_REMOTE_H

#include "pgconn.h"

/* Create schema pgqlua's tracking tables in the target (idempotent). */
int remote_install_schema(pgconn *t, char *err, size_t errlen);

/* The last batch the target committed for queue/consumer (0: none; -1:
 * the consumer has no row yet, see remote_add_consumer).  In
 * a transaction, its row stays locked until the end: an instance that
 * took over the consumer waits for the old one's target COMMIT and then
 * sees its batch. */
int remote_last_batch(pgconn *t, const char *queue, const char *consumer, long long *batch_id,
                      char *err, size_t errlen);

/* Give queue/consumer its row (batch 0) unless it has one, committed at
 * once (outside a transaction): from then on remote_last_batch locks it. */
int remote_add_consumer(pgconn *t, const char *queue, const char *consumer, char *err, size_t errlen);

/* Record an event's outcome in the target's open transaction: action is
 * "ok", "retry" or "failed"; delay for retry, reason for failed. */
int remote_record_event(pgconn *t, const char *queue, const char *consumer, long long batch_id,
                        const char *ev_id, const char *action, double delay, const char *reason,
                        char *err, size_t errlen);

/* Look an event up: 1 found (action, delay, reason filled), 0 not, -1 error. */
int remote_find_event(pgconn *t, const char *queue, const char *consumer, long long batch_id,
                      const char *ev_id, char *action, size_t alen, double *delay, char *reason,
                      size_t rlen, char *err, size_t errlen);

/* Mark batch_id complete in the target's open transaction and forget the
 * event rows of earlier batches. */
int remote_record_batch(pgconn *t, const char *queue, const char *consumer, long long batch_id,
                        long long tick_id, char *err, size_t errlen);

#endif

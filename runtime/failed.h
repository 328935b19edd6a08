/*
 * failed.h - the runtime's failed-event table, pgqlua.failed_event (pgq 3
 * has none; its DDL is in schema.h).  Called by the consumer (record a failure inside the
 * batch transaction) and by the CLI (install, failed list/retry/delete).
 */
#ifndef PGQLUA_FAILED_H
#define PGQLUA_FAILED_H

#include "pgconn.h"
#include "pgq.h"
#include <stdio.h>

/* What to tell the user when schema pgqlua is missing. */
#define FAILED_INSTALL_HINT " (" PGQ_INSTALL_HINT ")"

/* Record row `row` of a batch cursor result as failed, with a reason:
 * under consumer (the config's), taken by pgq_consumer (a group's
 * partition; `failed retry` puts it back there). */
int failed_record(pgconn *c, const char *queue, const char *consumer, const char *pgq_consumer,
                  const PGresult *res, int row, const char *reason,
                  char *err, size_t errlen);

/* ids: NULL or an empty list means all of this consumer's failed events.
 * Each prints what it did to out and returns the count, or -1 with err. */
long failed_list(pgconn *c, const char *queue, const char *consumer,
                 const long long *ids, int nids, FILE *out, char *err, size_t errlen);
long failed_retry(pgconn *c, const char *queue, const char *consumer,
                  const long long *ids, int nids, FILE *out, char *err, size_t errlen);
long failed_delete(pgconn *c, const char *queue, const char *consumer,
                   const long long *ids, int nids, FILE *out, char *err, size_t errlen);

#endif

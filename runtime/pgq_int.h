/*
 * pgq_int.h - what pgq.c shares with pgq_joint.c (the joint batch's SQL).
 * Nothing else includes it.
 */
#ifndef PGQLUA_PGQ_INT_H
#define PGQLUA_PGQ_INT_H

#include "pgq.h"

#include <stddef.h>

/* pgq.finish_batch's answer for a batch that is not open, in the error
 * the finishing statement raises. */
#define PGQ_FINISH_NOT_OPEN "is not open: another instance of this consumer finished it"

/* pgq.next_batch_custom's five parameters ($1 queue, $2 consumer, $3 lag,
 * $4 count, $5 interval) in params, formatted into the buffers given. */
void pgq_next_batch_params(const pgq_batch_knobs *k, const char **params, char *lag, size_t laglen,
                           char *interval, size_t ilen, char *count, size_t clen,
                           const char *queue, const char *consumer);

#endif

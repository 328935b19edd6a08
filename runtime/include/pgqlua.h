/*
 * pgqlua.h - embed a Lua-scripted PgQ consumer in a C program.
 *
 * A consumer is opened from a YAML config file, then driven one batch at a
 * time (pgqlua_run_batch) or until stopped (pgqlua_run).  Stop and reload
 * requests are async-signal-safe: call them from a signal handler or another
 * thread; the consumer acts on them between batches.
 */
#ifndef PGQLUA_H
#define PGQLUA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pgqlua_consumer pgqlua_consumer;

typedef enum pgqlua_status {
	PGQLUA_OK = 0,          /* a batch was processed and committed */
	PGQLUA_NO_BATCH,        /* nothing was ready in the queue */
	PGQLUA_BATCH_ABORTED,   /* the batch was rolled back; it comes again */
	PGQLUA_STOPPED,         /* pgqlua_run returned after a stop request */
	PGQLUA_ERR_USAGE,       /* bad arguments */
	PGQLUA_ERR_CONFIG,      /* the config file is missing or invalid */
	PGQLUA_ERR_SCRIPT,      /* the script does not load or lacks process_event */
	PGQLUA_ERR_DB,          /* the database cannot be reached or refused */
	PGQLUA_ERR_INTERNAL     /* out of memory or an unexpected failure */
} pgqlua_status;

/* Version string, e.g. "0.1.0". */
const char *pgqlua_version(void);

/* One-line description of a status code. */
const char *pgqlua_status_str(pgqlua_status st);

/*
 * Open a consumer: read the config, load the script and run its init().
 * Does not connect yet.  On failure *out is NULL and errbuf holds one line.
 */
pgqlua_status pgqlua_open(const char *config_path, pgqlua_consumer **out,
                          char *errbuf, size_t errlen);

/* Process at most one batch.  Connects first if needed. */
pgqlua_status pgqlua_run_batch(pgqlua_consumer *c);

/*
 * Process batches until stopped.  With once != 0, return PGQLUA_OK as soon
 * as no batch is ready.  Returns PGQLUA_STOPPED after pgqlua_request_stop.
 */
pgqlua_status pgqlua_run(pgqlua_consumer *c, int once);

/* The last error as one line ("" if none): why a call returned
 * PGQLUA_ERR_DB, for example.  Never contains a password. */
const char *pgqlua_last_error(const pgqlua_consumer *c);

/* Ask the consumer to stop after the current batch (async-signal-safe). */
void pgqlua_request_stop(pgqlua_consumer *c);

/* Ask the consumer to re-read config and script between batches
 * (async-signal-safe). */
void pgqlua_request_reload(pgqlua_consumer *c);

/* Close connections, the Lua state, and free the consumer.  NULL is fine. */
void pgqlua_close(pgqlua_consumer *c);

#ifdef __cplusplus
}
#endif

#endif /* PGQLUA_H */

/*
 * consumer.h - the batch loop behind the public pgqlua_* API (pgqlua.h):
 * owns the config, the connection, the script state and the counters, and
 * is the one place where a reloaded config and script are swapped in.
 */
#ifndef PGQLUA_CONSUMER_H
#define PGQLUA_CONSUMER_H

#include "pgqlua.h"
#include "config.h"

/* What the loop tells the program around it (pid/state file, sd_notify). */
typedef enum consumer_note {
	NOTE_READY,          /* connected, consumer registered: consuming */
	NOTE_START_FAILED,   /* msg: why it could not start */
	NOTE_RELOADING,
	NOTE_RELOADED,       /* msg: the script now running */
	NOTE_RELOAD_FAILED,  /* msg: why; the old config and script go on */
	NOTE_STATS,          /* msg: a short summary of the last period */
	NOTE_TICK,           /* between events and batches (watchdogs) */
	NOTE_STANDBY,        /* another instance holds the consumer: waiting */
	NOTE_ACTIVE,         /* this instance holds the consumer (after a standby) */
	NOTE_STOPPING
} consumer_note;

typedef void (*consumer_notify_fn)(void *arg, consumer_note what, const char *msg);

void consumer_set_notify(pgqlua_consumer *c, consumer_notify_fn fn, void *arg);

/* A daemon has no stderr: without a logfile, log to syslog. */
void consumer_log_to_syslog_by_default(pgqlua_consumer *c);

/* The consumer's config (for the CLI's register/failed commands). */
const config *consumer_config(const pgqlua_consumer *c);

/* Open a consumer from an already parsed config, taking ownership of it. */
pgqlua_status consumer_open_config(config *cfg, pgqlua_consumer **out, char *err, size_t errlen);

#endif

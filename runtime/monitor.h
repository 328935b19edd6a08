/*
 * monitor.h - what PgQ and the failed-event table say about one consumer,
 * for `pgqlua status`, the Nagios plugin `pgqlua check` and `pgqlua munin`.
 * Called by cli.c.
 */
#ifndef PGQLUA_MONITOR_H
#define PGQLUA_MONITOR_H

#include "config.h"
#include <stdio.h>

/* One partition of a group. */
typedef struct monitor_part {
	int registered;
	char owner[64];       /* the member holding it (HOST:PID); "" none */
	double lag;
	double last_seen;
	long long pending;
	long long target_tick;   /* a remote group: the tick of the target's last completed batch (0: none) */
} monitor_part;

typedef struct monitor_info {
	int registered;       /* 0: the consumer is not registered on the queue */
	double lag;           /* seconds since the last tick the consumer finished */
	double last_seen;     /* seconds since it last took a batch */
	long long pending;    /* events after its position (a sequence difference) */
	long long failed;     /* rows in pgqlua.failed_event; -1 if the table is missing */
	long long last_tick;
	long long current_batch; /* 0: none open */
	int has_target;          /* remote consumer: the target's figures below */
	long long target_batch;  /* last batch the target committed (0: none; -1: unknown) */
	long long target_tick;
	double target_age;       /* seconds since then */
	char target_error[512];  /* why the target could not be read */
	/* a group: the figures above sum up its partitions (the largest lag
	 * and last_seen, the sum of pending, every one registered) */
	int nparts;              /* 0: not a group */
	monitor_part *parts;
	int unowned;             /* partitions no member holds */
	int nmembers;
	char members[256];       /* their names, comma-separated (cut short) */
	int resize_to;           /* a resize to this many partitions is under way or was interrupted (0: none) */
	int resize_paused;       /* and the queue's ticker is paused by it */
} monitor_info;

/* Free what monitor_query allocated (a group's partitions). */
void monitor_info_free(monitor_info *m);

/* Connect and read the consumer's figures.  0, or -1 with err (database
 * unreachable: *unreachable is set). */
int monitor_query(const config *cfg, monitor_info *out, int *unreachable, char *err, size_t errlen);

/* pgqlua check ARGS: the Nagios plugin; returns 0..3. */
int monitor_check(const config *cfg, int argc, const char *const *argv);

/* pgqlua munin [config|autoconf]: the munin plugin protocol. */
int monitor_munin(const config *cfg, const char *mode);

#endif

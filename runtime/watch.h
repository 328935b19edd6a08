/*
 * watch.h - what the supervising parent (supervise.c) sees of its worker.
 * A page of shared memory holds the worker's phase (loading the script,
 * in a batch hook, in an event), the event's id and the deadline, written
 * by the worker around every call into the script; the parent reads it to
 * kill a worker past its deadline and to blame the event a worker died
 * in.  Strikes against events live in a small file beside the pid file
 * (PIDFILE.strikes), written by the parent after a death and read by the
 * next worker, so they outlast the process (run --once from cron too).
 * Without a parent (embedding) every worker-side call is a no-op.
 */
#ifndef PGQLUA_WATCH_H
#define PGQLUA_WATCH_H

#include <stddef.h>

typedef enum watch_phase {
	WATCH_IDLE = 0,
	WATCH_LOAD,            /* the script's top level or init() */
	WATCH_HOOK,            /* on_batch_start / on_batch_end */
	WATCH_EVENT            /* process_event */
} watch_phase;

typedef struct watch_page watch_page;

/* ---- the parent ---- */

/* A page shared with the workers forked after this call; NULL on failure. */
watch_page *watch_page_new(void);
void watch_page_free(watch_page *p);
/* Clear the phase and deadline before a new worker starts. */
void watch_page_reset(watch_page *p);
/* What the worker was doing: its phase, event id and the limit it had. */
watch_phase watch_page_phase(const watch_page *p, long long *ev_id, double *timeout);
/* The deadline the worker is past, by at least grace seconds: 1 yes. */
int watch_page_overdue(const watch_page *p, double grace);
/* The worker said it is consuming (connected, registered). */
int watch_page_ready(const watch_page *p);
void watch_page_set_restarts(watch_page *p, int n);
/* Count a strike against ev_id in the strike file; returns its strikes
 * now, or -1 when the file cannot be written. */
int watch_strike_add(const char *path, long long ev_id, const char *why);

/* ---- the worker ---- */

/* Attach to the parent's page and read the strike file. */
void watch_attach(watch_page *p, const char *strike_path);
/* Around a call into the script; timeout <= 0: no deadline. */
void watch_begin(watch_phase phase, long long ev_id, double timeout);
void watch_end(void);
void watch_ready(void);
int watch_restarts(void);
/* Are there strikes against any event?  (Cheap: checked per event.) */
int watch_any_strikes(void);
/* Strikes against ev_id (0 when none), with the last death's reason. */
int watch_strikes(long long ev_id, char *why, size_t whylen);
/* ev_id went to the failed-event table: drop its strikes once its batch
 * committed (watch_commit). */
void watch_forget(long long ev_id);
void watch_commit(void);

#endif

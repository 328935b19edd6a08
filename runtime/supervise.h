/*
 * supervise.h - the supervising parent of `pgqlua run` and `pgqlua start`
 * (supervise.c): the risky work (the script) runs in a worker process; the
 * parent holds the pid file, forwards signals, kills a worker past its
 * deadline or past the grace of a kill request, blames the event a worker
 * died in, and restarts a worker that died, with capped back-off.  Called
 * by service.c.  The embedding API has no parent.
 */
#ifndef PGQLUA_SUPERVISE_H
#define PGQLUA_SUPERVISE_H

#include "metrics.h"
#include "watch.h"

typedef struct supervise_opts {
	double kill_grace;         /* seconds past a deadline or a kill request */
	int once;                  /* run --once: no restart; a death is the exit */
	const char *strike_path;   /* the strike file (watch.h) */
	int ready_fd;              /* start: the waiting process's pipe, or -1 */
	int workers;               /* how many workers run side by side (config `workers`) */
	metrics *metrics;          /* the workers' figures (restarts and up are the parent's), or NULL */
	void (*tick)(void *arg, int final);   /* called every look at the workers and at the end, or NULL */
	void *tick_arg;
} supervise_opts;

/* In a worker: its number, 0 .. workers-1. */
int supervise_worker_index(void);

/* In a worker, once its signal handlers are installed: let through the
 * signals the parent forwards (held pending until then, so that a reload
 * or stop sent that early never meets the default action). */
void supervise_worker_signals(void);

/* Runs in each worker, after the watch page is attached, with signals
 * still blocked (see supervise_worker_signals); returns the worker's exit
 * code. */
typedef int (*supervise_worker_fn)(void *arg);

/* Run o->workers workers, each restarted when it dies, until one exits on
 * its own (its code is returned; the others are stopped; with once, the
 * run ends when every worker has ended, with the first non-zero code), a
 * stop ends the last one, or a worker dies before any was ready. */
int supervise_run(const supervise_opts *o, supervise_worker_fn fn, void *arg);

#endif

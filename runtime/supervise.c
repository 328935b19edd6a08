/*
 * supervise.c - the supervising parent (see supervise.h).  It waits for
 * signals with sigtimedwait (they stay blocked in the parent; a worker
 * unblocks them), looks at the worker's watch page every SUPERVISE_TICK,
 * and reaps.  A worker never outlives the parent (PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE 1   /* strsignal, sigtimedwait */
#include "supervise.h"
#include "clock.h"
#include "exitcode.h"
#include "log.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define SUPERVISE_TICK_NS (50 * 1000 * 1000)   /* how often the page is looked at */
#define RESTART_MIN 0.25         /* seconds before the first restart */
#define RESTART_MAX 30.0         /* doubling up to this */
#define RESTART_RESET 60.0       /* a worker that lived this long resets the back-off */

/* One worker slot: the worker and its restarts. */
typedef struct slot {
	watch_page *page;
	pid_t worker;
	double started;            /* the worker's start, monotonic */
	double restart_at;         /* no worker: when to fork the next */
	double backoff;
	int restarts;
	int done;                  /* its worker ended on its own: not restarted */
	char killed_why[256];      /* we killed the worker, and why */
} slot;

typedef struct sup {
	const supervise_opts *o;
	slot *slots;
	int nslots;
	int ever_ready;            /* some worker reached READY */
	int stops;                 /* stop requests (SIGTERM, SIGINT) */
	int quit;                  /* a kill request (SIGQUIT) */
	double kill_at;            /* immediate stop asked: SIGKILL after the grace */
	int ready_fd;              /* start's pipe until a worker is ready; -1 */
	int rc;                    /* the first exit code that ends the run; -1: none yet */
} sup;

static int worker_index;       /* in a worker: its slot */

int supervise_worker_index(void)
{
	return worker_index;
}

static void block_signals(sigset_t *set, sigset_t *old)
{
	static const int sigs[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD};
	sigemptyset(set);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaddset(set, sigs[i]);
	sigprocmask(SIG_BLOCK, set, old);
}

/* The signal mask the worker returns to once its handlers are in place
 * (supervise_worker_signals). */
static sigset_t worker_mask;
static int worker_mask_set;

void supervise_worker_signals(void)
{
	if (worker_mask_set)
		sigprocmask(SIG_SETMASK, &worker_mask, NULL);
}

static int fork_worker(sup *sp, slot *s, const sigset_t *old, supervise_worker_fn fn, void *arg)
{
	pid_t parent = getpid(), pid;
	int fork_errno;
	watch_page_reset(s->page);
	watch_page_set_restarts(s->page, s->restarts);
	metrics_before_fork(sp->o->metrics);
	pid = fork();
	fork_errno = errno;
	if (pid != 0)
		metrics_after_fork(sp->o->metrics);
	if (pid < 0) {
		log_error("cannot start a worker: %s", strerror(fork_errno));
		return -1;
	}
	if (pid == 0) {
		/* the worker: dies with the parent, never beside a new one */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
			_exit(EXIT_INTERNAL);
		/* signals stay blocked (pending) until the worker's handlers
		 * are installed: a reload or stop forwarded that early must not
		 * meet the default action */
		worker_mask = *old;
		worker_mask_set = 1;
		worker_index = (int)(s - sp->slots);
		watch_attach(s->page, sp->o->strike_path);
		exit(fn(arg));
	}
	s->worker = pid;
	s->started = clock_mono();
	s->killed_why[0] = '\0';
	log_debug("worker %d started (%d of %d)", (int)pid, (int)(s - sp->slots) + 1, sp->nslots);
	return 0;
}

static void kill_worker(slot *s, const char *why)
{
	if (s->worker <= 0 || s->killed_why[0])
		return;
	snprintf(s->killed_why, sizeof(s->killed_why), "%s", why);
	log_error("worker %d killed: %s", (int)s->worker, why);
	kill(s->worker, SIGKILL);
}

static void on_signal(sup *s, int sig)
{
	switch (sig) {
	case SIGTERM:
	case SIGINT:
		if (++s->stops >= 2 && s->kill_at <= 0)
			s->kill_at = clock_mono();
		break;
	case SIGQUIT:
		s->quit = 1;
		if (s->kill_at <= 0)
			s->kill_at = clock_mono();
		break;
	case SIGCHLD:
		return;
	default:
		break;
	}
	for (int i = 0; i < s->nslots; i++)
		if (s->slots[i].worker > 0)
			kill(s->slots[i].worker, sig);
}

/* The deadline of the worker's event, hook or load, and the grace of an
 * immediate stop. */
static void check_worker(sup *sp, slot *s)
{
	char why[256];
	long long ev;
	double timeout;
	watch_phase ph;

	if (s->worker <= 0 || s->killed_why[0])
		return;
	if (watch_page_overdue(s->page, sp->o->kill_grace)) {
		ph = watch_page_phase(s->page, &ev, &timeout);
		snprintf(why, sizeof(why), "%s ran past its limit (%gs) and kill_grace (%gs)",
		         ph == WATCH_EVENT ? "the event" : ph == WATCH_HOOK ? "a batch hook" : "the script's load or init()",
		         timeout, sp->o->kill_grace);
		kill_worker(s, why);
	} else if (sp->kill_at > 0 && clock_mono() > sp->kill_at + sp->o->kill_grace) {
		snprintf(why, sizeof(why), "it did not stop within kill_grace (%gs) of an immediate stop", sp->o->kill_grace);
		kill_worker(s, why);
	}
}

/* Why the worker died, for the log and the strike file. */
static void death_reason(const slot *s, int status, char *why, size_t len)
{
	if (s->killed_why[0])
		snprintf(why, len, "%s", s->killed_why);
	else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
		snprintf(why, len, "killed by SIGKILL (out of memory, or from outside)");
	else if (WIFSIGNALED(status))
		snprintf(why, len, "died of signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(why, len, "exited with %d", WEXITSTATUS(status));
}

/* The worker is gone: >= 0 the parent's exit code, -1 restart it. */
static int after_death(sup *sp, slot *s, int status)
{
	char why[300];
	long long ev;
	double timeout;
	watch_phase ph = watch_page_phase(s->page, &ev, &timeout);
	int ready = watch_page_ready(s->page), strikes;

	s->worker = 0;
	sp->ever_ready |= ready;
	metrics_set_restarts(metrics_worker_at(sp->o->metrics, (int)(s - sp->slots)), s->restarts);   /* down */
	if (WIFEXITED(status) && !s->killed_why[0]) {
		s->done = 1;
		return WEXITSTATUS(status);   /* it ended on its own: its word is final */
	}
	death_reason(s, status, why, sizeof(why));
	if (ph == WATCH_EVENT && ev > 0) {
		strikes = watch_strike_add(sp->o->strike_path, ev, why);
		log_error("the worker died in event %lld (%s); strike %d against it", ev, why, strikes);
	} else
		log_error("the worker died (%s)", why);
	if (sp->stops || sp->quit) {
		s->done = 1;
		return EXIT_OK_;      /* a stop was asked for, and it is stopped */
	}
	if (!sp->ever_ready) {
		char msg[400];
		int n = snprintf(msg, sizeof(msg), "the consumer could not start: the worker %s", why);
		log_error("%s", msg);
		if (sp->ready_fd >= 0 && n > 0)
			(void)!write(sp->ready_fd, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
		s->done = 1;
		return ph == WATCH_LOAD ? EXIT_SCRIPT : EXIT_INTERNAL;
	}
	if (sp->o->once) {
		s->done = 1;
		return s->killed_why[0] ? EXIT_TEMPFAIL : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	}
	if (clock_mono() - s->started >= RESTART_RESET)
		s->backoff = 0;
	s->backoff = s->backoff <= 0 ? RESTART_MIN : s->backoff * 2;
	if (s->backoff > RESTART_MAX)
		s->backoff = RESTART_MAX;
	s->restarts++;
	metrics_set_restarts(metrics_worker_at(sp->o->metrics, (int)(s - sp->slots)), s->restarts);
	s->restart_at = clock_mono() + s->backoff;
	log_warn("restarting the worker in %gs (restart %d)", s->backoff, s->restarts);
	return -1;
}

/* A worker ended for good with rc: the first non-zero code ends the run
 * (the others are asked to stop); without --once any end does. */
static void worker_ended(sup *s, int rc)
{
	if (s->rc < 0 || (s->rc == 0 && rc != 0))
		s->rc = rc;
	if (rc != 0 || !s->o->once) {
		for (int i = 0; i < s->nslots; i++) {
			if (s->slots[i].worker > 0 && !s->stops)
				kill(s->slots[i].worker, SIGTERM);
			s->slots[i].done = 1;
		}
		s->stops = s->stops ? s->stops : 1;
	}
}

int supervise_run(const supervise_opts *o, supervise_worker_fn fn, void *arg)
{
	struct timespec tick = {0, SUPERVISE_TICK_NS};
	sigset_t set, old;
	sup s;
	int rc = EXIT_INTERNAL, n = o->workers > 0 ? o->workers : 1;

	memset(&s, 0, sizeof(s));
	s.o = o;
	s.ready_fd = o->ready_fd;
	s.rc = -1;
	if (!(s.slots = calloc((size_t)n, sizeof(slot)))) {
		log_error("out of memory");
		return EXIT_INTERNAL;
	}
	s.nslots = n;
	for (int i = 0; i < n; i++)
		if (!(s.slots[i].page = watch_page_new())) {
			log_error("cannot map the worker's watch page: %s", strerror(errno));
			goto out;
		}
	block_signals(&set, &old);
	for (;;) {
		int sig, status, alive = 0, pending = 0;
		for (int i = 0; i < n; i++) {
			slot *w = &s.slots[i];
			if (w->worker <= 0 && !w->done && !s.stops && !s.quit && clock_mono() >= w->restart_at &&
			    fork_worker(&s, w, &old, fn, arg) != 0) {
				w->done = 1;
				worker_ended(&s, EXIT_INTERNAL);
			}
			alive += w->worker > 0;
			pending += w->worker <= 0 && !w->done;
		}
		if (!alive && (s.stops || s.quit || !pending)) {
			rc = s.rc >= 0 ? s.rc : EXIT_OK_;
			break;
		}
		sig = sigtimedwait(&set, NULL, &tick);
		if (sig > 0)
			on_signal(&s, sig);
		for (int i = 0; i < n; i++) {
			slot *w = &s.slots[i];
			int r;
			check_worker(&s, w);
			if (s.ready_fd >= 0 && watch_page_ready(w->page)) {
				close(s.ready_fd);   /* a worker told start it is ready */
				s.ready_fd = -1;
			}
			if (w->worker > 0 && waitpid(w->worker, &status, WNOHANG) == w->worker &&
			    (r = after_death(&s, w, status)) >= 0)
				worker_ended(&s, r);
		}
		if (o->tick)
			o->tick(o->tick_arg, 0);
	}
	for (int i = 0; i < n; i++)
		if (s.slots[i].worker > 0) {
			kill(s.slots[i].worker, SIGKILL);
			waitpid(s.slots[i].worker, NULL, 0);
		}
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (o->tick)
		o->tick(o->tick_arg, 1);
out:
	if (s.ready_fd >= 0)
		close(s.ready_fd);
	for (int i = 0; i < n; i++)
		if (s.slots[i].page)
			watch_page_free(s.slots[i].page);
	free(s.slots);
	return rc;
}

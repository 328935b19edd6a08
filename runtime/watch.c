/*
 * watch.c - the shared page and the strike file (see watch.h).
 */
#define _DEFAULT_SOURCE 1   /* MAP_ANONYMOUS */
#include "watch.h"
#include "clock.h"
#include "log.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define STRIKES_MAX 100          /* events remembered in the strike file */
#define WHY_LEN 160

struct watch_page {
	_Atomic double deadline;     /* monotonic seconds; 0: none */
	_Atomic double timeout;      /* the limit that deadline enforces */
	_Atomic long long ev_id;
	_Atomic int phase;
	_Atomic int ready;
	_Atomic int restarts;
};

typedef struct strike {
	long long ev_id;
	int count;
	int forget;                  /* drop at the next commit */
	char why[WHY_LEN];
} strike;

/* the worker's side */
static watch_page *page;
static const char *strike_file;
static strike strikes[STRIKES_MAX];
static int nstrikes;

watch_page *watch_page_new(void)
{
	void *p = mmap(NULL, sizeof(watch_page), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	memset(p, 0, sizeof(watch_page));
	return p;
}

void watch_page_free(watch_page *p)
{
	if (p)
		munmap(p, sizeof(*p));
}

void watch_page_reset(watch_page *p)
{
	p->deadline = 0;
	p->timeout = 0;
	p->ev_id = 0;
	p->phase = WATCH_IDLE;
}

watch_phase watch_page_phase(const watch_page *p, long long *ev_id, double *timeout)
{
	*ev_id = p->ev_id;
	*timeout = p->timeout;
	return (watch_phase)p->phase;
}

int watch_page_overdue(const watch_page *p, double grace)
{
	double d = p->deadline;
	return d > 0 && clock_mono() > d + grace;
}

int watch_page_ready(const watch_page *p)
{
	return p->ready;
}

void watch_page_set_restarts(watch_page *p, int n)
{
	p->restarts = n;
}

/* ---- the strike file: one line per event, "EV_ID COUNT REASON" ---- */

static int strikes_read(const char *path, strike *out, int max)
{
	FILE *f = fopen(path, "r");
	char line[WHY_LEN + 64];
	int n = 0;
	if (!f)
		return 0;
	while (n < max && fgets(line, sizeof(line), f)) {
		char *end;
		strike *s = &out[n];
		memset(s, 0, sizeof(*s));
		s->ev_id = strtoll(line, &end, 10);
		s->count = (int)strtol(end, &end, 10);
		if (s->ev_id <= 0 || s->count <= 0 || *end != ' ')
			continue;
		snprintf(s->why, sizeof(s->why), "%s", end + 1);
		s->why[strcspn(s->why, "\n")] = '\0';
		n++;
	}
	fclose(f);
	return n;
}

/* Write the file whole: a temporary file beside it, then rename. */
static int strikes_write(const char *path, const strike *st, int n)
{
	char tmp[4096];
	FILE *f;
	int fd, rc = 0;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -1;
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	for (int i = 0; i < n; i++)
		if (!st[i].forget)
			fprintf(f, "%lld %d %s\n", st[i].ev_id, st[i].count, st[i].why);
	if (fclose(f) != 0 || rename(tmp, path) != 0)
		rc = -1;
	if (rc != 0)
		unlink(tmp);
	return rc;
}

int watch_strike_add(const char *path, long long ev_id, const char *why)
{
	strike st[STRIKES_MAX];
	int n = strikes_read(path, st, STRIKES_MAX), i;

	for (i = 0; i < n && st[i].ev_id != ev_id; i++)
		;
	if (i == n) {
		if (n == STRIKES_MAX) {   /* forget the oldest */
			memmove(st, st + 1, sizeof(st[0]) * (STRIKES_MAX - 1));
			n--;
		}
		i = n++;
		memset(&st[i], 0, sizeof(st[i]));
		st[i].ev_id = ev_id;
	}
	st[i].count++;
	snprintf(st[i].why, sizeof(st[i].why), "%s", why);
	for (char *p = st[i].why; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	return strikes_write(path, st, n) == 0 ? st[i].count : -1;
}

/* ---- the worker ---- */

void watch_attach(watch_page *p, const char *strike_path)
{
	page = p;
	strike_file = strike_path;
	nstrikes = strike_path ? strikes_read(strike_path, strikes, STRIKES_MAX) : 0;
}

/* The parent reads the page a few times a second: plain (relaxed) stores
 * are enough, and cost nothing next to an event. */
#define STORE(field, v) atomic_store_explicit(&page->field, v, memory_order_relaxed)

void watch_begin(watch_phase phase, long long ev_id, double timeout)
{
	if (!page)
		return;
	STORE(ev_id, ev_id);
	STORE(timeout, timeout);
	STORE(deadline, timeout > 0 ? clock_mono() + timeout : 0);
	STORE(phase, (int)phase);
}

void watch_end(void)
{
	if (!page)
		return;
	STORE(phase, (int)WATCH_IDLE);
	STORE(deadline, 0.0);
}

void watch_ready(void)
{
	if (page)
		page->ready = 1;
}

int watch_restarts(void)
{
	return page ? page->restarts : 0;
}

int watch_any_strikes(void)
{
	return nstrikes > 0;
}

int watch_strikes(long long ev_id, char *why, size_t whylen)
{
	for (int i = 0; i < nstrikes; i++)
		if (strikes[i].ev_id == ev_id && !strikes[i].forget) {
			snprintf(why, whylen, "%s", strikes[i].why);
			return strikes[i].count;
		}
	return 0;
}

void watch_forget(long long ev_id)
{
	for (int i = 0; i < nstrikes; i++)
		if (strikes[i].ev_id == ev_id)
			strikes[i].forget = 2;   /* 2: not written yet */
}

void watch_commit(void)
{
	int pending = 0;
	for (int i = 0; i < nstrikes; i++)
		pending |= strikes[i].forget == 2;
	if (!pending || !strike_file)
		return;
	if (strikes_write(strike_file, strikes, nstrikes) != 0)
		log_warn("cannot rewrite %s", strike_file);
	for (int i = 0; i < nstrikes; i++)
		if (strikes[i].forget)
			strikes[i].forget = 1;
}

/*
 * metrics.c - Prometheus text exposition of the consumer's figures (see
 * metrics.h): the slots of atomic counters (shared with the workers or
 * not), the renderer, the HTTP endpoint through libmicrohttpd and the
 * textfile for node_exporter.
 */
#define _DEFAULT_SOURCE 1   /* MAP_ANONYMOUS */
#include "metrics.h"
#include "daemon.h"
#include "log.h"

#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define METRICS_BUCKETS 14
static const double bucket_le[METRICS_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                  0.1,    0.25,  0.5,    1,     2.5,  5,     10};

/* Counters only grow and are read without a lock: relaxed atomics (a
 * scrape may see one batch's figures half added, never a torn number). */
#define ADD(field, v) atomic_fetch_add_explicit(&(field), (v), memory_order_relaxed)
#define SET(field, v) atomic_store_explicit(&(field), (v), memory_order_relaxed)
#define GET(field) atomic_load_explicit(&(field), memory_order_relaxed)

/* the server's own thread; ITC: it can be quiesced (metrics_before_fork) */
#define SERVER_FLAGS (MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC)

typedef struct metrics_hist {
	_Atomic long long n[METRICS_BUCKETS + 1];   /* per bucket; the last: over the largest */
	_Atomic long long sum_ns;
} metrics_hist;

struct metrics_part {
	_Atomic long long events[METRICS_N_OUTCOMES];
	_Atomic long long batches, aborts;
	metrics_hist batch_seconds, event_seconds;
	_Atomic int db_known;                       /* the PgQ figures below were read */
	_Atomic double lag, last_seen;
	_Atomic long long pending, failed_rows;
};

struct metrics_worker {
	_Atomic int up;                             /* connected and the script loaded */
	_Atomic int partitions;                     /* the group's layout this worker follows */
	_Atomic long long reloads_ok, reloads_failed;
	_Atomic long long restarts;
	_Atomic long long lua_memory;
};

struct metrics {
	metrics_worker *workers;   /* the slots: workers, then parts, in one area */
	metrics_part *parts;
	int nworkers, nparts;      /* nparts: the count at start, partslots: room */
	int partslots;
	int grouped;
	void *area;
	size_t area_len;
	int shared;                /* area is a shared mapping */
	char labels[512];          /* queue="...",consumer="..." */
	struct MHD_Daemon *httpd;
	int listen_fd;             /* while the server is stopped around a fork, or -1 */
};

static metrics *attached;      /* in a worker: the parent's slots */
static int attached_worker;

/* name as a label value: \, " and newline escaped */
static void label_value(char *out, size_t len, const char *v)
{
	size_t o = 0;
	for (; *v && o + 3 < len; v++) {
		if (*v == '\\' || *v == '"') {
			out[o++] = '\\';
			out[o++] = *v;
		} else if (*v == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else
			out[o++] = *v;
	}
	out[o] = '\0';
}

metrics *metrics_new(const char *queue, const char *consumer, int nworkers, int nparts, int grouped, int shared)
{
	metrics *m = calloc(1, sizeof(*m));
	char q[200], c[200];
	if (!m)
		return NULL;
	m->listen_fd = -1;
	m->nworkers = nworkers > 0 ? nworkers : 1;
	m->nparts = nparts > 0 ? nparts : 1;
	m->grouped = grouped;
	/* a group has room to grow: `pgqlua resize` changes its layout while
	 * the parent, whose config keeps the first count, runs on */
	m->partslots = grouped && m->nparts < METRICS_MAX_PARTITIONS ? METRICS_MAX_PARTITIONS : m->nparts;
	m->area_len = sizeof(metrics_worker) * (size_t)m->nworkers + sizeof(metrics_part) * (size_t)m->partslots;
	if (shared) {
		m->area = mmap(NULL, m->area_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (m->area == MAP_FAILED)
			m->area = NULL;
		m->shared = m->area != NULL;
	} else
		m->area = calloc(1, m->area_len);
	if (!m->area) {
		free(m);
		return NULL;
	}
	memset(m->area, 0, m->area_len);   /* all-zero bits: every atomic at 0 */
	m->workers = m->area;
	m->parts = (metrics_part *)(m->workers + m->nworkers);
	label_value(q, sizeof(q), queue);
	label_value(c, sizeof(c), consumer);
	snprintf(m->labels, sizeof(m->labels), "queue=\"%s\",consumer=\"%s\"", q, c);
	return m;
}

void metrics_free(metrics *m)
{
	if (!m)
		return;
	if (m->httpd)
		MHD_stop_daemon(m->httpd);
	if (m->listen_fd >= 0)
		close(m->listen_fd);
	if (m->shared)
		munmap(m->area, m->area_len);
	else
		free(m->area);
	free(m);
}

void metrics_attach(metrics *m, int worker)
{
	if (m && m->listen_fd >= 0) {
		/* the parent's listening socket (its server was stopped for the
		 * fork): not this process's to serve */
		close(m->listen_fd);
		m->listen_fd = -1;
	}
	attached = m;
	attached_worker = worker;
}

metrics *metrics_attached(int *worker)
{
	*worker = attached_worker;
	return attached;
}

metrics_part *metrics_part_at(metrics *m, int i)
{
	return m && i >= 0 && i < m->partslots ? &m->parts[i] : NULL;
}

metrics_worker *metrics_worker_at(metrics *m, int i)
{
	return m && i >= 0 && i < m->nworkers ? &m->workers[i] : NULL;
}

static void observe(metrics_hist *h, double seconds)
{
	int i = 0;
	while (i < METRICS_BUCKETS && seconds > bucket_le[i])
		i++;
	ADD(h->n[i], 1);
	ADD(h->sum_ns, (long long)(seconds * 1e9));
}

void metrics_count_event(metrics_part *p, enum metrics_outcome o)
{
	if (p)
		ADD(p->events[o], 1);
}

void metrics_event_seconds(metrics_part *p, double seconds)
{
	if (p)
		observe(&p->event_seconds, seconds);
}

void metrics_count_batch(metrics_part *p, double seconds)
{
	if (!p)
		return;
	ADD(p->batches, 1);
	observe(&p->batch_seconds, seconds);
}

void metrics_count_abort(metrics_part *p)
{
	if (p)
		ADD(p->aborts, 1);
}

void metrics_set_db(metrics_part *p, double lag, double last_seen, long long pending, long long failed_rows)
{
	if (!p)
		return;
	SET(p->lag, lag);
	SET(p->last_seen, last_seen);
	SET(p->pending, pending);
	SET(p->failed_rows, failed_rows);
	SET(p->db_known, 1);
}

void metrics_set_partitions(metrics_worker *w, int partitions)
{
	if (w)
		SET(w->partitions, partitions);
}

/* How many partitions to show: the layout the workers follow (the
 * largest, while a resize reaches them one by one), else the start's. */
static int parts_shown(const metrics *m)
{
	int n = 0;
	for (int i = 0; i < m->nworkers; i++) {
		int p = GET(m->workers[i].partitions);
		n = p > n ? p : n;
	}
	n = n > 0 ? n : m->nparts;
	return n < m->partslots ? n : m->partslots;
}

void metrics_set_up(metrics_worker *w, int up, long long lua_memory)
{
	if (!w)
		return;
	SET(w->up, up);
	SET(w->lua_memory, lua_memory);
}

void metrics_count_reload(metrics_worker *w, int ok)
{
	if (w && ok)
		ADD(w->reloads_ok, 1);
	else if (w)
		ADD(w->reloads_failed, 1);
}

void metrics_set_restarts(metrics_worker *w, int restarts)
{
	if (!w)
		return;
	SET(w->restarts, restarts);
	SET(w->up, 0);
}

typedef struct text {
	char *buf;
	size_t len, cap;
	int oom;
} text;

static void put(text *t, const char *fmt, ...)
{
	va_list ap;
	int n;
	if (t->oom)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->oom = 1;
			return;
		}
		if ((size_t)n < t->cap - t->len) {
			t->len += (size_t)n;
			return;
		}
		{
			size_t cap = (t->cap + (size_t)n) * 2;
			char *b = realloc(t->buf, cap);
			if (!b) {
				t->oom = 1;
				return;
			}
			t->buf = b;
			t->cap = cap;
		}
	}
}

static void head(text *t, const char *name, const char *type, const char *help)
{
	put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The labels of partition i ("partition" only in a group) or of worker i
 * ("worker" only with more than one). */
static const char *part_labels(const metrics *m, int i, char *buf, size_t len)
{
	if (!m->grouped)
		return m->labels;
	snprintf(buf, len, "%s,partition=\"%d\"", m->labels, i);
	return buf;
}

static const char *worker_labels(const metrics *m, int i, char *buf, size_t len)
{
	if (m->nworkers <= 1)
		return m->labels;
	snprintf(buf, len, "%s,worker=\"%d\"", m->labels, i);
	return buf;
}

static void hist(text *t, const char *l, const char *name, const metrics_hist *h)
{
	long long cum = 0;
	for (int i = 0; i < METRICS_BUCKETS; i++) {
		cum += GET(h->n[i]);
		put(t, "%s_bucket{%s,le=\"%g\"} %lld\n", name, l, bucket_le[i], cum);
	}
	cum += GET(h->n[METRICS_BUCKETS]);
	put(t, "%s_bucket{%s,le=\"+Inf\"} %lld\n%s_sum{%s} %.17g\n%s_count{%s} %lld\n", name, l, cum, name, l,
	    (double)GET(h->sum_ns) / 1e9, name, l, cum);
}

/* A family with one value per partition or per worker. */
typedef double (*value_fn)(const void *slot);
#define VALUE_FN(fname, type, expr) \
	static double fname(const void *slot) { const type *s = slot; return (double)(expr); }
VALUE_FN(v_up, metrics_worker, GET(s->up))
VALUE_FN(v_restarts, metrics_worker, GET(s->restarts))
VALUE_FN(v_memory, metrics_worker, GET(s->lua_memory))
VALUE_FN(v_batches, metrics_part, GET(s->batches))
VALUE_FN(v_aborts, metrics_part, GET(s->aborts))
VALUE_FN(v_lag, metrics_part, GET(s->lag))
VALUE_FN(v_last_seen, metrics_part, GET(s->last_seen))
VALUE_FN(v_pending, metrics_part, GET(s->pending))
VALUE_FN(v_failed_rows, metrics_part, GET(s->failed_rows))

typedef enum family_of {
	OF_WORKERS,
	OF_PARTS,
	OF_PARTS_DB            /* PgQ's figures: only the partitions read once */
} family_of;

static void family(text *t, const metrics *m, family_of of, const char *name, const char *type,
                   const char *help, value_fn fn)
{
	char buf[600];
	int of_workers = of == OF_WORKERS, n = of_workers ? m->nworkers : parts_shown(m);
	head(t, name, type, help);
	for (int i = 0; i < n; i++) {
		const void *slot = of_workers ? (const void *)&m->workers[i] : (const void *)&m->parts[i];
		if (of == OF_PARTS_DB && !GET(m->parts[i].db_known))
			continue;
		put(t, "%s{%s} %.17g\n", name,
		    of_workers ? worker_labels(m, i, buf, sizeof(buf)) : part_labels(m, i, buf, sizeof(buf)), fn(slot));
	}
}

static void render_parts(text *t, const metrics *m)
{
	static const char *const outcomes[METRICS_N_OUTCOMES] = {"ok", "retry", "failed", "error"};
	char buf[600];
	int n = parts_shown(m);

	head(t, "pgqlua_events_total", "counter", "events processed, by the script's outcome");
	for (int i = 0; i < n; i++)
		for (int o = 0; o < METRICS_N_OUTCOMES; o++)
			put(t, "pgqlua_events_total{%s,outcome=\"%s\"} %lld\n", part_labels(m, i, buf, sizeof(buf)),
			    outcomes[o], GET(m->parts[i].events[o]));
	family(t, m, OF_PARTS, "pgqlua_batches_total", "counter", "batches committed", v_batches);
	family(t, m, OF_PARTS, "pgqlua_batch_aborts_total", "counter", "batches rolled back to come again", v_aborts);
	head(t, "pgqlua_batch_duration_seconds", "histogram", "time from taking a batch to its commit");
	for (int i = 0; i < n; i++)
		hist(t, part_labels(m, i, buf, sizeof(buf)), "pgqlua_batch_duration_seconds", &m->parts[i].batch_seconds);
	head(t, "pgqlua_event_duration_seconds", "histogram", "time process_event took per event");
	for (int i = 0; i < n; i++)
		hist(t, part_labels(m, i, buf, sizeof(buf)), "pgqlua_event_duration_seconds", &m->parts[i].event_seconds);
	family(t, m, OF_PARTS_DB, "pgqlua_lag_seconds", "gauge", "PgQ: age of the last tick the consumer finished", v_lag);
	family(t, m, OF_PARTS_DB, "pgqlua_last_seen_seconds", "gauge", "PgQ: seconds since the consumer last took a batch",
	       v_last_seen);
	family(t, m, OF_PARTS_DB, "pgqlua_pending_events", "gauge", "PgQ: events after the consumer's position (estimate)",
	       v_pending);
	family(t, m, OF_PARTS_DB, "pgqlua_failed_events", "gauge", "rows in the failed-event table for this consumer",
	       v_failed_rows);
}

char *metrics_render(metrics *m)
{
	char buf[600];
	text t = {malloc(8192), 0, 8192, 0};

	if (!t.buf)
		return NULL;
	family(&t, m, OF_WORKERS, "pgqlua_up", "gauge", "1 while connected to the queue's database with the script loaded",
	       v_up);
	render_parts(&t, m);
	head(&t, "pgqlua_reloads_total", "counter", "config and script reloads, by result");
	for (int i = 0; i < m->nworkers; i++) {
		const char *l = worker_labels(m, i, buf, sizeof(buf));
		put(&t, "pgqlua_reloads_total{%s,result=\"ok\"} %lld\npgqlua_reloads_total{%s,result=\"failed\"} %lld\n",
		    l, GET(m->workers[i].reloads_ok), l, GET(m->workers[i].reloads_failed));
	}
	family(&t, m, OF_WORKERS, "pgqlua_worker_restarts_total", "counter", "times the supervising parent restarted the worker",
	       v_restarts);
	family(&t, m, OF_WORKERS, "pgqlua_lua_memory_bytes", "gauge", "bytes the script's Lua state holds", v_memory);
	if (t.oom) {
		free(t.buf);
		return NULL;
	}
	return t.buf;
}

int metrics_write_file(metrics *m, const char *path)
{
	char *s = metrics_render(m);
	int rc = s ? daemon_state_write(path, s) : -1;
	free(s);
	return rc;
}

static enum MHD_Result serve(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                             const char *version, const char *upload, size_t *upload_len, void **state)
{
	metrics *m = cls;
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char *body = NULL;
	unsigned int status = MHD_HTTP_OK;
	static const char not_found[] = "not found: try /metrics\n";

	(void)version, (void)upload, (void)upload_len, (void)state;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		status = MHD_HTTP_METHOD_NOT_ALLOWED;
	else if (strcmp(url, "/metrics") != 0)
		status = MHD_HTTP_NOT_FOUND;
	else if (!(body = metrics_render(m)))
		status = MHD_HTTP_INTERNAL_SERVER_ERROR;
	if (body)
		resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	else
		resp = MHD_create_response_from_buffer(sizeof(not_found) - 1, (void *)not_found,
		                                       MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	                        body ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain");
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

int metrics_listen(metrics *m, const char *addr, char *err, size_t errlen)
{
	char host[256];
	const char *colon = strrchr(addr, ':');
	struct addrinfo hints, *ai = NULL;
	size_t hl;
	int r;

	if (!colon || !colon[1]) {
		snprintf(err, errlen, "metrics_listen \"%s\": give HOST:PORT", addr);
		return -1;
	}
	hl = (size_t)(colon - addr);
	if (hl >= sizeof(host))
		hl = sizeof(host) - 1;
	memcpy(host, addr, hl);
	host[hl] = '\0';
	if (host[0] == '[' && hl >= 2 && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((r = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &ai)) != 0) {
		snprintf(err, errlen, "metrics_listen \"%s\": %s", addr, gai_strerror(r));
		return -1;
	}
	m->httpd = MHD_start_daemon(SERVER_FLAGS | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
	                            0, NULL, NULL, serve, m, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
	                            MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
	                            MHD_OPTION_END);
	freeaddrinfo(ai);
	if (!m->httpd) {
		snprintf(err, errlen, "metrics_listen \"%s\": cannot listen there (in use, or not an address of this host)",
		         addr);
		return -1;
	}
	return 0;
}

/*
 * No thread may run beside a fork: a lock it held at that moment (the
 * allocator's, stdio's) would stay locked for ever in the child.  The
 * server's thread is stopped around each fork of a worker; its listening
 * socket is kept, so scrapes only wait.
 */
void metrics_before_fork(metrics *m)
{
	if (!m || !m->httpd)
		return;
	m->listen_fd = (int)MHD_quiesce_daemon(m->httpd);
	MHD_stop_daemon(m->httpd);
	m->httpd = NULL;
	if (m->listen_fd < 0)
		log_warn("metrics_listen: the server could not keep its socket across a fork; /metrics is off");
}

void metrics_after_fork(metrics *m)
{
	if (!m || m->httpd || m->listen_fd < 0)
		return;
	m->httpd = MHD_start_daemon(SERVER_FLAGS, 0, NULL, NULL, serve, m, MHD_OPTION_LISTEN_SOCKET, m->listen_fd,
	                            MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
	                            MHD_OPTION_END);
	if (m->httpd)
		m->listen_fd = -1;   /* the server's again: it closes it when stopped */
	else
		log_warn("metrics_listen: cannot serve again after starting a worker; /metrics waits");
}

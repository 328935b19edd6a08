/*
 * metrics.c - Prometheus text exposition of one consumer's figures (see
 * metrics.h): the published copy under a mutex, the renderer, the HTTP
 * endpoint through libmicrohttpd and the textfile for node_exporter.
 */
#include "metrics.h"
#include "daemon.h"

#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static const double bucket_le[METRICS_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                  0.1,    0.25,  0.5,    1,     2.5,  5,     10};

struct metrics {
	pthread_mutex_t lock;
	metrics_figures fig;          /* the published copy */
	char labels[512];             /* queue="...",consumer="..." */
	struct MHD_Daemon *httpd;
};

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

metrics *metrics_new(const char *queue, const char *consumer)
{
	metrics *m = calloc(1, sizeof(*m));
	char q[200], c[200];
	if (!m)
		return NULL;
	pthread_mutex_init(&m->lock, NULL);
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
	pthread_mutex_destroy(&m->lock);
	free(m);
}

void metrics_observe(metrics_hist *h, double seconds)
{
	int i = 0;
	while (i < METRICS_BUCKETS && seconds > bucket_le[i])
		i++;
	if (i < METRICS_BUCKETS)
		h->le[i]++;
	h->count++;
	h->sum += seconds;
}

void metrics_publish(metrics *m, const metrics_figures *f)
{
	pthread_mutex_lock(&m->lock);
	m->fig = *f;
	pthread_mutex_unlock(&m->lock);
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

static void one(text *t, const char *labels, const char *name, const char *type, const char *help, double v)
{
	head(t, name, type, help);
	put(t, "%s{%s} %.17g\n", name, labels, v);
}

static void hist(text *t, const char *labels, const char *name, const char *help, const metrics_hist *h)
{
	long long cum = 0;
	head(t, name, "histogram", help);
	for (int i = 0; i < METRICS_BUCKETS; i++) {
		cum += h->le[i];
		put(t, "%s_bucket{%s,le=\"%g\"} %lld\n", name, labels, bucket_le[i], cum);
	}
	put(t, "%s_bucket{%s,le=\"+Inf\"} %lld\n%s_sum{%s} %.17g\n%s_count{%s} %lld\n", name, labels, h->count,
	    name, labels, h->sum, name, labels, h->count);
}

char *metrics_render(metrics *m)
{
	static const char *const outcomes[METRICS_N_OUTCOMES] = {"ok", "retry", "failed", "error"};
	metrics_figures f;
	text t = {malloc(8192), 0, 8192, 0};
	const char *l = m->labels;

	if (!t.buf)
		return NULL;
	pthread_mutex_lock(&m->lock);
	f = m->fig;
	pthread_mutex_unlock(&m->lock);

	one(&t, l, "pgqlua_up", "gauge", "1 while connected to the queue's database with the script loaded", f.up);
	head(&t, "pgqlua_events_total", "counter", "events processed, by the script's outcome");
	for (int i = 0; i < METRICS_N_OUTCOMES; i++)
		put(&t, "pgqlua_events_total{%s,outcome=\"%s\"} %lld\n", l, outcomes[i], f.events[i]);
	one(&t, l, "pgqlua_batches_total", "counter", "batches committed", (double)f.batches);
	one(&t, l, "pgqlua_batch_aborts_total", "counter", "batches rolled back to come again", (double)f.aborts);
	hist(&t, l, "pgqlua_batch_duration_seconds", "time from taking a batch to its commit", &f.batch_seconds);
	hist(&t, l, "pgqlua_event_duration_seconds", "time process_event took per event", &f.event_seconds);
	if (f.db_known) {
		one(&t, l, "pgqlua_lag_seconds", "gauge", "PgQ: age of the last tick the consumer finished", f.lag);
		one(&t, l, "pgqlua_last_seen_seconds", "gauge", "PgQ: seconds since the consumer last took a batch",
		    f.last_seen);
		one(&t, l, "pgqlua_pending_events", "gauge", "PgQ: events after the consumer's position (estimate)",
		    (double)f.pending);
		one(&t, l, "pgqlua_failed_events", "gauge", "rows in the failed-event table for this consumer",
		    (double)f.failed_rows);
	}
	head(&t, "pgqlua_reloads_total", "counter", "config and script reloads, by result");
	put(&t, "pgqlua_reloads_total{%s,result=\"ok\"} %lld\npgqlua_reloads_total{%s,result=\"failed\"} %lld\n", l,
	    f.reloads_ok, l, f.reloads_failed);
	one(&t, l, "pgqlua_worker_restarts_total", "counter", "times the supervising parent restarted the worker",
	    (double)f.worker_restarts);
	one(&t, l, "pgqlua_lua_memory_bytes", "gauge", "bytes the script's Lua state holds", (double)f.lua_memory);
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
	m->httpd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
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

/*
 * status.c - `pgqlua status [--json] CONFIG` (see service.h): the running
 * consumer's state file (pid, worker, script, last reload, role) beside
 * its pid file, and PgQ's view of the consumer (monitor.c).
 */
#include "service.h"
#include "daemon.h"
#include "exitcode.h"
#include "monitor.h"

#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One worker of a `workers: K` run, from its state file. */
typedef struct status_worker {
	char pid[32], restarts[32], role[16];
} status_worker;

/* What status shows. */
typedef struct status_view {
	int running;
	pid_t pid;
	char started[32], script[PATH_MAX], loaded[32], reload_at[32], reload[600], role[16];
	char wpid[32], wrestarts[32];
	int nworkers;                 /* workers found: the first one's state, then PIDFILE.state.I */
	status_worker workers[CONFIG_WORKERS_MAX];
	int dbok;
	monitor_info m;
	char err[1024];
	time_t now;
} status_view;

/* The value of key in the state file's text, or "". */
static void state_get(const char *state, const char *key, char *out, size_t len)
{
	size_t k = strlen(key);
	out[0] = '\0';
	for (const char *p = state; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		if (strncmp(p, key, k) == 0 && p[k] == '=') {
			const char *e = strchr(p, '\n');
			size_t n = e ? (size_t)(e - p - (ptrdiff_t)k - 1) : strlen(p + k + 1);
			snprintf(out, len, "%.*s", (int)n, p + k + 1);
			return;
		}
}


/* The state file's text (empty when missing); 0 when it was read. */
static int state_read(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");
	size_t n = 0;
	buf[0] = '\0';
	if (!f)
		return -1;
	n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
	return 0;
}

/* The other workers of a `workers: K` run: each keeps its own state file,
 * PIDFILE.state.I (a worker being restarted may have none for a moment). */
static void read_workers(const config *cfg, const char *statefile, status_view *v)
{
	char path[PATH_MAX + 32], state[8192];
	status_worker *w = &v->workers[0];
	snprintf(w->pid, sizeof(w->pid), "%s", v->wpid[0] ? v->wpid : "?");
	snprintf(w->restarts, sizeof(w->restarts), "%s", v->wrestarts[0] ? v->wrestarts : "0");
	snprintf(w->role, sizeof(w->role), "%s", v->role[0] ? v->role : "active");
	v->nworkers = 1;
	for (int i = 1; i < cfg->workers && i < CONFIG_WORKERS_MAX; i++) {
		w = &v->workers[v->nworkers];
		snprintf(path, sizeof(path), "%s.%d", statefile, i);
		if (state_read(path, state, sizeof(state)) != 0)
			continue;
		state_get(state, "worker_pid", w->pid, sizeof(w->pid));
		state_get(state, "worker_restarts", w->restarts, sizeof(w->restarts));
		state_get(state, "role", w->role, sizeof(w->role));
		if (!w->pid[0])
			continue;
		if (!w->restarts[0])
			snprintf(w->restarts, sizeof(w->restarts), "0");
		if (!w->role[0])
			snprintf(w->role, sizeof(w->role), "active");
		v->nworkers++;
	}
}

static void read_view(const config *cfg, status_view *v)
{
	char pidfile[PATH_MAX], statefile[PATH_MAX + 8], state[8192] = "";
	int unreachable;

	memset(v, 0, sizeof(*v));
	v->now = time(NULL);
	service_pidfile(cfg, pidfile, sizeof(pidfile));
	snprintf(statefile, sizeof(statefile), "%s.state", pidfile);
	v->running = daemon_pidfile_running(pidfile, &v->pid);
	if (v->running)
		(void)state_read(statefile, state, sizeof(state));
	state_get(state, "started_at", v->started, sizeof(v->started));
	state_get(state, "script", v->script, sizeof(v->script));
	state_get(state, "script_loaded_at", v->loaded, sizeof(v->loaded));
	state_get(state, "last_reload_at", v->reload_at, sizeof(v->reload_at));
	state_get(state, "last_reload", v->reload, sizeof(v->reload));
	state_get(state, "role", v->role, sizeof(v->role));
	state_get(state, "worker_pid", v->wpid, sizeof(v->wpid));
	state_get(state, "worker_restarts", v->wrestarts, sizeof(v->wrestarts));
	if (v->running)
		read_workers(cfg, statefile, v);
	v->dbok = monitor_query(cfg, &v->m, &unreachable, v->err, sizeof(v->err)) == 0;
}

static long long age(const status_view *v, const char *t)
{
	return t[0] ? (long long)(v->now - atoll(t)) : 0LL;
}

static void print_json(const config *cfg, const status_view *v)
{
	const monitor_info *m = &v->m;
	printf("{\"consumer\":");
	service_json_str(stdout, cfg->consumer_name);
	printf(",\"queue\":");
	service_json_str(stdout, cfg->queue_name);
	printf(",\"running\":%s", v->running ? "true" : "false");
	if (v->running) {
		printf(",\"pid\":%d,\"uptime\":%lld,\"script\":", (int)v->pid, age(v, v->started));
		service_json_str(stdout, v->script);
		printf(",\"script_loaded_at\":%s,\"last_reload\":", v->loaded[0] ? v->loaded : "null");
		service_json_str(stdout, v->reload);
		printf(",\"last_reload_at\":%s,\"role\":", v->reload_at[0] && atoll(v->reload_at) ? v->reload_at : "null");
		service_json_str(stdout, v->role[0] ? v->role : "active");
		printf(",\"worker_pid\":%s,\"worker_restarts\":%s", v->wpid[0] ? v->wpid : "null",
		       v->wrestarts[0] ? v->wrestarts : "0");
		printf(",\"workers\":[");
		for (int i = 0; i < v->nworkers; i++) {
			const status_worker *w = &v->workers[i];
			printf("%s{\"worker\":%d,\"pid\":%s,\"restarts\":%s,\"role\":", i ? "," : "", i,
			       strcmp(w->pid, "?") ? w->pid : "null", w->restarts);
			service_json_str(stdout, w->role);
			printf("}");
		}
		printf("]");
	}
	if (v->dbok && m->registered)
		printf(",\"registered\":true,\"lag\":%.3f,\"last_seen\":%.3f,\"pending\":%lld,\"failed\":%lld",
		       m->lag, m->last_seen, m->pending, m->failed < 0 ? 0 : m->failed);
	else if (v->dbok)
		printf(",\"registered\":false");
	else {
		printf(",\"database_error\":");
		service_json_str(stdout, v->err);
	}
	if (v->dbok && m->nparts > 0) {
		printf(",\"members\":%d,\"unowned\":%d,\"resizing_to\":", m->nmembers, m->unowned);
		if (m->resize_to > 0)
			printf("%d,\"ticker_paused_by_resize\":%s", m->resize_to, m->resize_paused ? "true" : "false");
		else
			printf("null");
		printf(",\"partitions\":[");
		for (int i = 0; i < m->nparts; i++) {
			const monitor_part *mp = &m->parts[i];
			printf("%s{\"partition\":%d,\"registered\":%s,\"owner\":", i ? "," : "", i,
			       mp->registered ? "true" : "false");
			if (mp->owner[0])
				service_json_str(stdout, mp->owner);
			else
				printf("null");
			printf(",\"lag\":%.3f,\"last_seen\":%.3f,\"pending\":%lld", mp->lag, mp->last_seen, mp->pending);
			if (m->has_target && m->target_batch >= 0)
				printf(",\"target_tick\":%lld", mp->target_tick);
			printf("}");
		}
		printf("]");
	}
	if (v->dbok && m->has_target) {
		printf(",\"source_tick\":%lld,\"target_batch\":%lld,\"target_tick\":%lld", m->last_tick,
		       m->target_batch, m->target_tick);
		if (m->target_batch < 0) {
			printf(",\"target_error\":");
			service_json_str(stdout, m->target_error);
		}
	}
	printf("}\n");
}

static void print_text(const config *cfg, const status_view *v)
{
	const monitor_info *m = &v->m;
	if (v->running) {
		printf("consumer %s on queue %s: running (%s), pid %d, up %llds\n", cfg->consumer_name, cfg->queue_name,
		       strcmp(v->role, "standby") != 0 ? "active"
		       : cfg->partitions > 0 ? "a group member holding no partition"
		                             : "hot standby: another instance is active",
		       (int)v->pid, age(v, v->started));
		if (cfg->workers > 1) {
			printf("workers: %d of %d running:", v->nworkers, cfg->workers);
			for (int i = 0; i < v->nworkers; i++)
				printf("%s pid %s (%s restarts, %s)", i ? "," : "", v->workers[i].pid, v->workers[i].restarts,
				       strcmp(v->workers[i].role, "standby") != 0 ? "active"
				       : cfg->partitions > 0                  ? "no partition"
				                                              : "standby");
			printf("\n");
		} else
			printf("worker: pid %s, %s restarts\n", v->wpid[0] ? v->wpid : "?",
			       v->wrestarts[0] ? v->wrestarts : "0");
		printf("script: %s (loaded %llds ago); last reload: %s\n", v->script, age(v, v->loaded),
		       v->reload[0] ? v->reload : "none");
	} else
		printf("consumer %s on queue %s: not running\n", cfg->consumer_name, cfg->queue_name);
	if (!v->dbok)
		printf("database: %s\n", v->err);
	else if (!m->registered)
		printf("pgq: consumer not registered on the queue\n");
	else
		printf("pgq: lag %.1fs, last seen %.1fs ago, %lld pending events, %lld failed events\n", m->lag,
		       m->last_seen, m->pending, m->failed < 0 ? 0 : m->failed);
	if (v->dbok && m->nparts > 0) {
		printf("group: %d partitions, %d without an owner; %d members: %s\n", m->nparts, m->unowned,
		       m->nmembers, m->nmembers ? m->members : "none");
		if (m->resize_to > 0)
			printf("group: a resize to %d partitions is under way or was interrupted%s\n", m->resize_to,
			       m->resize_paused ? "; it paused the queue's ticker: if no resize runs, run `pgqlua resize` again" : "");
		for (int i = 0; i < m->nparts; i++)
			printf("  %s.p%dof%d: %s%s, lag %.1fs, last seen %.1fs ago, %lld pending events\n",
			       cfg->consumer_name, i, m->nparts, m->parts[i].owner[0] ? "owner " : "no owner",
			       m->parts[i].owner, m->parts[i].lag, m->parts[i].last_seen, m->parts[i].pending);
	}
	if (v->dbok && m->has_target) {
		if (m->target_batch < 0)
			printf("target: %s\n", m->target_error);
		else if (m->nparts > 0) {
			printf("target: the partitions' last completed batches at ticks");
			for (int i = 0; i < m->nparts; i++)
				printf("%s %lld", i ? "," : "", m->parts[i].target_tick);
			printf("; source at tick %lld\n", m->last_tick);
		} else
			printf("target: last completed batch %lld (tick %lld, %.1fs ago); source at tick %lld\n",
			       m->target_batch, m->target_tick, m->target_age, m->last_tick);
	}
}

int service_status(const char *config_path, int json)
{
	status_view *v;
	config *cfg;
	int rc;

	if ((rc = service_load_config(config_path, &cfg)) != 0)
		return rc;
	if (!(v = malloc(sizeof(*v)))) {
		fprintf(stderr, "pgqlua: out of memory\n");
		config_free(cfg);
		return EXIT_INTERNAL;
	}
	read_view(cfg, v);
	if (json)
		print_json(cfg, v);
	else
		print_text(cfg, v);
	rc = v->running ? EXIT_OK_ : EXIT_NOT_RUNNING;
	if (v->dbok)
		monitor_info_free(&v->m);
	free(v);
	config_free(cfg);
	return rc;
}

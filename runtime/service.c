/*
 * service.c - the daemon commands (see service.h).  A running consumer
 * holds a lock on its pid file (so a stale file from a dead process is
 * recognised) and keeps a state file beside it (PIDFILE.state: start time,
 * script, last reload) that `status` reads; it speaks sd_notify when
 * systemd asks for it.
 */
#include "service.h"
#include "cli.h"
#include "consumer.h"
#include "daemon.h"
#include "log.h"
#include "monitor.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct service {
	pgqlua_consumer *c;
	char pidfile[PATH_MAX];
	char statefile[PATH_MAX + 8];
	int pid_fd;
	int ready_fd;              /* start: the waiting parent's pipe; -1 otherwise */
	time_t started_at;
	time_t script_loaded_at;
	time_t reload_at;
	char script[PATH_MAX];
	char reload_result[600];
} service;

void service_pidfile(const config *cfg, char *buf, size_t len)
{
	if (cfg->pidfile)
		snprintf(buf, len, "%s", cfg->pidfile);
	else
		snprintf(buf, len, "%s.pid", cfg->path);
}

static void state_write(service *s)
{
	char text[PATH_MAX + 1024];
	snprintf(text, sizeof(text),
	         "pid=%d\nstarted_at=%lld\nscript=%s\nscript_loaded_at=%lld\nlast_reload_at=%lld\nlast_reload=%s\n",
	         (int)getpid(), (long long)s->started_at, s->script, (long long)s->script_loaded_at,
	         (long long)s->reload_at, s->reload_result);
	(void)daemon_state_write(s->statefile, text);
}

static void ready_report(service *s, const char *msg)
{
	char buf[1200];
	int n;
	if (s->ready_fd < 0)
		return;
	n = snprintf(buf, sizeof(buf), "%s", msg);
	(void)!write(s->ready_fd, buf, (size_t)n);
	close(s->ready_fd);
	s->ready_fd = -1;
}

static void on_note(void *arg, consumer_note what, const char *msg)
{
	service *s = arg;
	char buf[1024];
	struct timespec ts;

	switch (what) {
	case NOTE_READY:
		state_write(s);
		snprintf(buf, sizeof(buf), "READY=1\nSTATUS=consuming\nMAINPID=%d", (int)getpid());
		daemon_notify(buf);
		snprintf(buf, sizeof(buf), "OK %d", (int)getpid());
		ready_report(s, buf);
		break;
	case NOTE_START_FAILED:
		ready_report(s, msg);
		break;
	case NOTE_RELOADING:
		clock_gettime(CLOCK_MONOTONIC, &ts);
		snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%llu",
		         (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
		daemon_notify(buf);
		break;
	case NOTE_RELOADED:
	case NOTE_RELOAD_FAILED:
		s->reload_at = time(NULL);
		if (what == NOTE_RELOADED) {
			snprintf(s->script, sizeof(s->script), "%s", msg);
			s->script_loaded_at = s->reload_at;
			snprintf(s->reload_result, sizeof(s->reload_result), "ok");
		} else
			snprintf(s->reload_result, sizeof(s->reload_result), "failed: %s", msg);
		state_write(s);
		snprintf(buf, sizeof(buf), "READY=1\nSTATUS=%s", what == NOTE_RELOADED ? "reloaded" : "reload failed, old script running");
		daemon_notify(buf);
		break;
	case NOTE_STATS:
		snprintf(buf, sizeof(buf), "STATUS=%s", msg);
		daemon_notify(buf);
		break;
	case NOTE_TICK:
		daemon_watchdog();
		if (daemon_take_level_change())
			log_write(LOG_LVL_INFO, "log level is now %s", log_level_name(log_current_level));
		break;
	case NOTE_STOPPING:
		daemon_notify("STOPPING=1");
		break;
	}
}

/* start: wait in the original process for the daemon to say it is ready */
static int wait_for_daemon(int fd, const config *cfg)
{
	char buf[1200];
	ssize_t n, got = 0;
	while ((n = read(fd, buf + got, sizeof(buf) - 1 - (size_t)got)) > 0)
		got += n;
	close(fd);
	buf[got > 0 ? got : 0] = '\0';
	if (strncmp(buf, "OK ", 3) == 0) {
		printf("pgqlua: consumer %s started (pid %s)\n", cfg->consumer_name, buf + 3);
		return EXIT_OK_;
	}
	fprintf(stderr, "pgqlua: %s\n", got > 0 ? buf : "the daemon exited before it was ready");
	return EXIT_DB;
}

int service_run(const char *config_path, int once, int detach)
{
	service s;
	config *cfg;
	char err[1024], abspath[PATH_MAX];
	pid_t other;
	pgqlua_status st;
	int rc, pipefd[2] = {-1, -1};

	memset(&s, 0, sizeof(s));
	s.pid_fd = s.ready_fd = -1;
	/* a daemon's relative paths must survive chdir and reloads */
	if (detach && realpath(config_path, abspath))
		config_path = abspath;
	{
		config_status cst = config_load(config_path, &cfg, err, sizeof(err));
		if (cst != CONFIG_OK) {
			fprintf(stderr, "pgqlua: %s\n", err);
			return cli_config_exit(cst);
		}
	}
	service_pidfile(cfg, s.pidfile, sizeof(s.pidfile));
	snprintf(s.statefile, sizeof(s.statefile), "%s.state", s.pidfile);
	snprintf(s.script, sizeof(s.script), "%s", cfg->script);
	st = consumer_open_config(cfg, &s.c, err, sizeof(err));
	if (st != PGQLUA_OK) {
		fprintf(stderr, "pgqlua: %s\n", err);
		return st == PGQLUA_ERR_SCRIPT ? EXIT_SCRIPT : st == PGQLUA_ERR_CONFIG ? EXIT_CONFIG : EXIT_INTERNAL;
	}
	cfg = NULL;   /* the consumer owns it, and a reload replaces it */
	switch (daemon_pidfile_lock(s.pidfile, &s.pid_fd, &other, err, sizeof(err))) {
	case DAEMON_LOCKED:
		break;
	case DAEMON_RUNNING:
		fprintf(stderr, "pgqlua: consumer %s is already running (pid %d, pid file %s)\n",
		        consumer_config(s.c)->consumer_name, (int)other, s.pidfile);
		pgqlua_close(s.c);
		return EXIT_RUNNING;
	case DAEMON_LOCK_ERROR:
		fprintf(stderr, "pgqlua: %s\n", err);
		pgqlua_close(s.c);
		return EXIT_CANTCREAT;
	}
	if (detach) {
		pid_t pid;
		if (pipe(pipefd) != 0 || (pid = fork()) < 0) {
			fprintf(stderr, "pgqlua: cannot start: %s\n", strerror(errno));
			pgqlua_close(s.c);
			return EXIT_INTERNAL;
		}
		if (pid > 0) {
			const config *c = consumer_config(s.c);
			close(pipefd[1]);
			waitpid(pid, NULL, 0);
			rc = wait_for_daemon(pipefd[0], c);
			/* the daemon holds the lock now; ours goes with this process */
			close(s.pid_fd);
			pgqlua_close(s.c);
			return rc;
		}
		close(pipefd[0]);
		if (daemon_detach(err, sizeof(err)) != 0) {
			(void)!write(pipefd[1], err, strlen(err));
			_exit(EXIT_INTERNAL);
		}
		s.ready_fd = pipefd[1];
		consumer_log_to_syslog_by_default(s.c);
	}
	if (daemon_pidfile_write(s.pid_fd, err, sizeof(err)) != 0) {
		fprintf(stderr, "pgqlua: %s: %s\n", s.pidfile, err);
		ready_report(&s, err);
		daemon_pidfile_remove(s.pidfile, s.pid_fd);
		pgqlua_close(s.c);
		return EXIT_CANTCREAT;
	}
	s.started_at = s.script_loaded_at = time(NULL);
	snprintf(s.reload_result, sizeof(s.reload_result), "none");
	consumer_set_notify(s.c, on_note, &s);
	daemon_install_signals(s.c);
	st = pgqlua_run(s.c, once);
	daemon_reset_signals();
	rc = st == PGQLUA_OK || st == PGQLUA_NO_BATCH || st == PGQLUA_STOPPED ? EXIT_OK_
	     : st == PGQLUA_BATCH_ABORTED                                       ? EXIT_TEMPFAIL
	     : st == PGQLUA_ERR_DB                                              ? EXIT_DB
	                                                                        : EXIT_INTERNAL;
	if (st == PGQLUA_ERR_DB && pgqlua_last_error(s.c)[0] && !detach)
		fprintf(stderr, "pgqlua: %s\n", pgqlua_last_error(s.c));
	ready_report(&s, pgqlua_last_error(s.c)[0] ? pgqlua_last_error(s.c) : "the consumer stopped");
	unlink(s.statefile);
	daemon_pidfile_remove(s.pidfile, s.pid_fd);
	pgqlua_close(s.c);
	return rc;
}

static int load_for_control(const char *config_path, config **cfg)
{
	char err[1024];
	config_status st = config_load(config_path, cfg, err, sizeof(err));
	if (st == CONFIG_OK)
		return 0;
	fprintf(stderr, "pgqlua: %s\n", err);
	return cli_config_exit(st);
}

/* Poll until the pid file is no longer locked, up to secs. */
static int wait_gone(const char *pidfile, double secs)
{
	struct timespec step = {0, 50 * 1000 * 1000};
	pid_t pid;
	for (double waited = 0; waited < secs; waited += 0.05) {
		if (!daemon_pidfile_running(pidfile, &pid))
			return 1;
		nanosleep(&step, NULL);
	}
	return !daemon_pidfile_running(pidfile, &pid);
}

int service_signal(const char *config_path, const char *command)
{
	config *cfg;
	char pidfile[PATH_MAX];
	pid_t pid;
	int rc, sig;

	if ((rc = load_for_control(config_path, &cfg)) != 0)
		return rc;
	service_pidfile(cfg, pidfile, sizeof(pidfile));
	if (!daemon_pidfile_running(pidfile, &pid) || pid <= 0) {
		printf("pgqlua: consumer %s is not running\n", cfg->consumer_name);
		rc = strcmp(command, "stop") == 0 || strcmp(command, "kill") == 0 ? EXIT_OK_ : EXIT_NOT_RUNNING;
		goto out;
	}
	sig = !strcmp(command, "stop")      ? SIGTERM
	      : !strcmp(command, "kill")    ? SIGQUIT
	      : !strcmp(command, "reload")  ? SIGHUP
	      : !strcmp(command, "logmore") ? SIGUSR1
	                                    : SIGUSR2;
	if (kill(pid, sig) != 0) {
		fprintf(stderr, "pgqlua: cannot signal pid %d: %s\n", (int)pid, strerror(errno));
		rc = EXIT_INTERNAL;
		goto out;
	}
	rc = EXIT_OK_;
	if (sig == SIGTERM) {
		printf("pgqlua: stopping consumer %s (pid %d): the current batch finishes first; waiting up to %gs\n",
		       cfg->consumer_name, (int)pid, cfg->shutdown_timeout);
		fflush(stdout);
		if (wait_gone(pidfile, cfg->shutdown_timeout))
			printf("pgqlua: consumer %s stopped\n", cfg->consumer_name);
		else {
			fprintf(stderr, "pgqlua: consumer %s (pid %d) is still running after %gs; `pgqlua kill` stops it at once\n",
			        cfg->consumer_name, (int)pid, cfg->shutdown_timeout);
			rc = EXIT_TEMPFAIL;
		}
	} else if (sig == SIGQUIT) {
		if (!wait_gone(pidfile, 10)) {
			kill(pid, SIGKILL);
			wait_gone(pidfile, 10);
		}
		printf("pgqlua: consumer %s killed; its open batch was rolled back and will be delivered again\n",
		       cfg->consumer_name);
	} else
		printf("pgqlua: sent %s to consumer %s (pid %d)\n", command, cfg->consumer_name, (int)pid);
out:
	config_free(cfg);
	return rc;
}

/* The value of key in the state file, or "" */
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

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

int service_status(const char *config_path, int json)
{
	config *cfg;
	char pidfile[PATH_MAX], statefile[PATH_MAX + 8], state[8192] = "", err[1024];
	char started[32], script[PATH_MAX], loaded[32], reload_at[32], reload[600];
	monitor_info m;
	pid_t pid;
	int rc, running, unreachable, dbok;
	time_t now = time(NULL);

	if ((rc = load_for_control(config_path, &cfg)) != 0)
		return rc;
	service_pidfile(cfg, pidfile, sizeof(pidfile));
	snprintf(statefile, sizeof(statefile), "%s.state", pidfile);
	running = daemon_pidfile_running(pidfile, &pid);
	if (running) {
		FILE *f = fopen(statefile, "r");
		if (f) {
			size_t n = fread(state, 1, sizeof(state) - 1, f);
			state[n] = '\0';
			fclose(f);
		}
	}
	state_get(state, "started_at", started, sizeof(started));
	state_get(state, "script", script, sizeof(script));
	state_get(state, "script_loaded_at", loaded, sizeof(loaded));
	state_get(state, "last_reload_at", reload_at, sizeof(reload_at));
	state_get(state, "last_reload", reload, sizeof(reload));
	dbok = monitor_query(cfg, &m, &unreachable, err, sizeof(err)) == 0;

	if (json) {
		printf("{\"consumer\":");
		json_str(stdout, cfg->consumer_name);
		printf(",\"queue\":");
		json_str(stdout, cfg->queue_name);
		printf(",\"running\":%s", running ? "true" : "false");
		if (running) {
			printf(",\"pid\":%d,\"uptime\":%lld,\"script\":", (int)pid,
			       started[0] ? (long long)(now - atoll(started)) : 0LL);
			json_str(stdout, script);
			printf(",\"script_loaded_at\":%s,\"last_reload\":", loaded[0] ? loaded : "null");
			json_str(stdout, reload);
			printf(",\"last_reload_at\":%s", reload_at[0] && atoll(reload_at) ? reload_at : "null");
		}
		if (dbok && m.registered)
			printf(",\"registered\":true,\"lag\":%.3f,\"last_seen\":%.3f,\"pending\":%lld,\"failed\":%lld",
			       m.lag, m.last_seen, m.pending, m.failed < 0 ? 0 : m.failed);
		else if (dbok)
			printf(",\"registered\":false");
		else {
			printf(",\"database_error\":");
			json_str(stdout, err);
		}
		if (dbok && m.has_target) {
			printf(",\"source_tick\":%lld,\"target_batch\":%lld,\"target_tick\":%lld", m.last_tick,
			       m.target_batch, m.target_tick);
			if (m.target_batch < 0) {
				printf(",\"target_error\":");
				json_str(stdout, m.target_error);
			}
		}
		printf("}\n");
	} else {
		if (running) {
			printf("consumer %s on queue %s: running, pid %d, up %llds\n", cfg->consumer_name,
			       cfg->queue_name, (int)pid, started[0] ? (long long)(now - atoll(started)) : 0LL);
			printf("script: %s (loaded %llds ago); last reload: %s\n", script,
			       loaded[0] ? (long long)(now - atoll(loaded)) : 0LL, reload[0] ? reload : "none");
		} else
			printf("consumer %s on queue %s: not running\n", cfg->consumer_name, cfg->queue_name);
		if (!dbok)
			printf("database: %s\n", err);
		else if (!m.registered)
			printf("pgq: consumer not registered on the queue\n");
		else
			printf("pgq: lag %.1fs, last seen %.1fs ago, %lld pending events, %lld failed events\n", m.lag,
			       m.last_seen, m.pending, m.failed < 0 ? 0 : m.failed);
		if (dbok && m.has_target) {
			if (m.target_batch < 0)
				printf("target: %s\n", m.target_error);
			else
				printf("target: last completed batch %lld (tick %lld, %.1fs ago); source at tick %lld\n",
				       m.target_batch, m.target_tick, m.target_age, m.last_tick);
		}
	}
	config_free(cfg);
	return running ? EXIT_OK_ : EXIT_NOT_RUNNING;
}

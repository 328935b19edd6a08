/*
 * service.c - the daemon commands (see service.h).  A running consumer
 * holds a lock on its pid file (so a stale file from a dead process is
 * recognised) and keeps a state file beside it (PIDFILE.state: start time,
 * script, last reload) that `status` reads; it speaks sd_notify when
 * systemd asks for it.
 */
#include "service.h"
#include "exitcode.h"
#include "consumer.h"
#include "clock.h"
#include "daemon.h"
#include "group.h"
#include "log.h"
#include "monitor.h"
#include "supervise.h"
#include "watch.h"

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
	char statefile[PATH_MAX + 16];
	int pid_fd;
	int ready_fd;              /* start: the waiting parent's pipe; -1 otherwise */
	time_t started_at;
	time_t script_loaded_at;
	time_t reload_at;
	char script[PATH_MAX];
	char reload_result[600];
	const char *role;          /* "active" or "standby" */
	const char *config_path;
	int once, detach;
	pid_t main_pid;            /* the supervising parent's, in the pid file */
	metrics *metrics;          /* the parent's: every worker's figures, or NULL */
	const char *metrics_file;
	double metrics_period;
	double next_metrics_file;  /* monotonic */
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
	         "pid=%d\nworker_pid=%d\nworker_restarts=%d\nstarted_at=%lld\nscript=%s\nscript_loaded_at=%lld\n"
	         "last_reload_at=%lld\nlast_reload=%s\nrole=%s\n",
	         (int)s->main_pid, (int)getpid(), watch_restarts(), (long long)s->started_at, s->script,
	         (long long)s->script_loaded_at, (long long)s->reload_at, s->reload_result,
	         s->role ? s->role : "active");
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
		watch_ready();
		state_write(s);
		snprintf(buf, sizeof(buf), "READY=1\nSTATUS=consuming\nMAINPID=%d", (int)s->main_pid);
		daemon_notify(buf);
		snprintf(buf, sizeof(buf), "OK %d", (int)s->main_pid);
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
	case NOTE_STANDBY:
	case NOTE_ACTIVE:
		s->role = what == NOTE_STANDBY ? "standby" : "active";
		state_write(s);
		daemon_notify(what == NOTE_STANDBY ? "STATUS=standby: another instance is active" : "STATUS=consuming");
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
	if (got > 0 && buf[0] >= '0' && buf[0] <= '9') {
		/* "CODE message" from the worker or the supervising parent */
		char *msg;
		long code = strtol(buf, &msg, 10);
		fprintf(stderr, "pgqlua: %s\n", *msg == ' ' ? msg + 1 : msg);
		return code > 0 && code < 126 ? (int)code : EXIT_INTERNAL;
	}
	fprintf(stderr, "pgqlua: %s\n", got > 0 ? buf : "the daemon exited before it was ready");
	return EXIT_DB;
}

/* The status a consumer's run ends with, as the program's exit code. */
static int exit_code_of(pgqlua_status st)
{
	switch (st) {
	case PGQLUA_OK:
	case PGQLUA_NO_BATCH:
	case PGQLUA_STOPPED: return EXIT_OK_;
	case PGQLUA_BATCH_ABORTED: return EXIT_TEMPFAIL;
	case PGQLUA_ERR_DB: return EXIT_DB;
	case PGQLUA_ERR_SCRIPT: return EXIT_SCRIPT;
	case PGQLUA_ERR_CONFIG: return EXIT_CONFIG;
	default: return EXIT_INTERNAL;
	}
}

/* A worker that cannot start: one line on stderr and to `start`. */
static int worker_failed(service *s, int code, const char *err)
{
	char msg[1200];
	fprintf(stderr, "pgqlua: %s\n", err);
	snprintf(msg, sizeof(msg), "%d %s", code, err);
	ready_report(s, msg);
	return code;
}

/* The worker process: the consumer itself (supervise.h). */
static int worker_main(void *arg)
{
	service *s = arg;
	config *cfg;
	char err[1024];
	pgqlua_status st;
	int rc;

	close(s->pid_fd);   /* the parent holds the lock */
	s->pid_fd = -1;
	metrics_attach(s->metrics, supervise_worker_index());
	if (supervise_worker_index() > 0) {
		/* `status` reads the first worker's state; the others keep their own */
		size_t n = strlen(s->statefile);
		snprintf(s->statefile + n, sizeof(s->statefile) - n, ".%d", supervise_worker_index());
	}
	{
		config_status cst = config_load(s->config_path, &cfg, err, sizeof(err));
		if (cst != CONFIG_OK)
			return worker_failed(s, service_config_exit(cst), err);
	}
	snprintf(s->script, sizeof(s->script), "%s", cfg->script);
	st = consumer_open_config(cfg, &s->c, err, sizeof(err));
	if (st != PGQLUA_OK)
		return worker_failed(s, exit_code_of(st), err);
	if (s->detach)
		consumer_log_to_syslog_by_default(s->c);
	s->started_at = s->script_loaded_at = time(NULL);
	snprintf(s->reload_result, sizeof(s->reload_result), "none");
	consumer_set_notify(s->c, on_note, s);
	daemon_install_signals(s->c);
	supervise_worker_signals();
	st = pgqlua_run(s->c, s->once);
	daemon_reset_signals();
	rc = exit_code_of(st == PGQLUA_ERR_SCRIPT ? PGQLUA_ERR_INTERNAL : st);
	if ((st == PGQLUA_ERR_DB || st == PGQLUA_ERR_CONFIG) && pgqlua_last_error(s->c)[0] && !s->detach)
		fprintf(stderr, "pgqlua: %s\n", pgqlua_last_error(s->c));
	if (pgqlua_last_error(s->c)[0]) {
		char msg[1200];
		snprintf(msg, sizeof(msg), "%d %s", rc, pgqlua_last_error(s->c));
		ready_report(s, msg);
	} else
		ready_report(s, "70 the consumer stopped");
	pgqlua_close(s->c);
	s->c = NULL;
	return rc;
}

#define METRICS_FILE_PERIOD 30.0   /* metrics_file without stats_period */

/* The parent serves metrics_listen and writes metrics_file for all its
 * workers (their slots are shared with them, metrics.h).  0, or the exit
 * code with the reason on stderr and to `start`. */
static int parent_metrics(service *s, const config *cfg)
{
	char err[1024];
	if (!cfg->metrics_listen && !cfg->metrics_file)
		return 0;
	if (!(s->metrics = metrics_new(cfg->queue_name, cfg->consumer_name, cfg->workers, group_size(cfg),
	                               cfg->partitions > 0, 1)))
		return worker_failed(s, EXIT_INTERNAL, "out of memory");
	if (cfg->metrics_listen && metrics_listen(s->metrics, cfg->metrics_listen, err, sizeof(err)) != 0)
		return worker_failed(s, EXIT_CONFIG, err);
	s->metrics_file = cfg->metrics_file;
	s->metrics_period = cfg->stats_period > 0 ? cfg->stats_period : METRICS_FILE_PERIOD;
	return 0;
}

/* The supervising parent, every look at its workers: metrics_file when due. */
static void parent_tick(void *arg, int final)
{
	service *s = arg;
	double now = clock_mono();
	if (!s->metrics_file || (now < s->next_metrics_file && !final))
		return;
	s->next_metrics_file = now + s->metrics_period;
	if (metrics_write_file(s->metrics, s->metrics_file) != 0)
		log_warn("metrics_file %s: cannot write it", s->metrics_file);
}

int service_run(const char *config_path, int once, int detach)
{
	service s;
	config *cfg;
	char err[1024], abspath[PATH_MAX], strikes[PATH_MAX + 16];
	supervise_opts so;
	pid_t other;
	int rc, pipefd[2] = {-1, -1};

	memset(&s, 0, sizeof(s));
	s.pid_fd = s.ready_fd = -1;
	/* a daemon's relative paths must survive chdir and reloads */
	if (detach && realpath(config_path, abspath))
		config_path = abspath;
	s.config_path = config_path;
	s.once = once;
	s.detach = detach;
	{
		config_status cst = config_load(config_path, &cfg, err, sizeof(err));
		if (cst != CONFIG_OK) {
			fprintf(stderr, "pgqlua: %s\n", err);
			return service_config_exit(cst);
		}
	}
	service_pidfile(cfg, s.pidfile, sizeof(s.pidfile));
	snprintf(s.statefile, sizeof(s.statefile), "%s.state", s.pidfile);
	snprintf(strikes, sizeof(strikes), "%s.strikes", s.pidfile);
	switch (daemon_pidfile_lock(s.pidfile, &s.pid_fd, &other, err, sizeof(err))) {
	case DAEMON_LOCKED:
		break;
	case DAEMON_RUNNING:
		fprintf(stderr, "pgqlua: consumer %s is already running (pid %d, pid file %s)\n",
		        cfg->consumer_name, (int)other, s.pidfile);
		config_free(cfg);
		return EXIT_RUNNING;
	case DAEMON_LOCK_ERROR:
		fprintf(stderr, "pgqlua: %s\n", err);
		config_free(cfg);
		return EXIT_CANTCREAT;
	}
	if (detach) {
		pid_t pid;
		if (pipe(pipefd) != 0 || (pid = fork()) < 0) {
			fprintf(stderr, "pgqlua: cannot start: %s\n", strerror(errno));
			config_free(cfg);
			return EXIT_INTERNAL;
		}
		if (pid > 0) {
			close(pipefd[1]);
			waitpid(pid, NULL, 0);
			rc = wait_for_daemon(pipefd[0], cfg);
			/* the daemon holds the lock now; ours goes with this process */
			close(s.pid_fd);
			config_free(cfg);
			return rc;
		}
		close(pipefd[0]);
		if (daemon_detach(err, sizeof(err)) != 0) {
			(void)!write(pipefd[1], err, strlen(err));
			_exit(EXIT_INTERNAL);
		}
		s.ready_fd = pipefd[1];
	}
	log_configure((log_level)cfg->log_level, cfg->consumer_name, cfg->logfile, cfg->log_syslog, detach);
	if (daemon_pidfile_write(s.pid_fd, err, sizeof(err)) != 0) {
		fprintf(stderr, "pgqlua: %s: %s\n", s.pidfile, err);
		ready_report(&s, err);
		daemon_pidfile_remove(s.pidfile, s.pid_fd);
		config_free(cfg);
		return EXIT_CANTCREAT;
	}
	s.main_pid = getpid();
	if ((rc = parent_metrics(&s, cfg)) != 0)
		goto out;
	so = (supervise_opts){.kill_grace = cfg->kill_grace, .once = once, .strike_path = strikes,
	                      .ready_fd = s.ready_fd, .workers = cfg->workers, .metrics = s.metrics,
	                      .tick = parent_tick, .tick_arg = &s};
	rc = supervise_run(&so, worker_main, &s);
	unlink(s.statefile);
	for (int i = 1; i < cfg->workers; i++) {
		char extra[PATH_MAX + 32];
		snprintf(extra, sizeof(extra), "%s.%d", s.statefile, i);
		unlink(extra);
	}
out:
	metrics_free(s.metrics);
	daemon_pidfile_remove(s.pidfile, s.pid_fd);
	config_free(cfg);
	return rc;
}

int service_config_exit(int st)
{
	return st == CONFIG_ERR_NOFILE ? EXIT_NOINPUT
	       : st == CONFIG_ERR_NOMEM ? EXIT_INTERNAL : EXIT_CONFIG;
}

int service_load_config(const char *config_path, config **cfg)
{
	char err[1024];
	config_status st = config_load(config_path, cfg, err, sizeof(err));
	if (st == CONFIG_OK)
		return 0;
	fprintf(stderr, "pgqlua: %s\n", err);
	return service_config_exit(st);
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

	if ((rc = service_load_config(config_path, &cfg)) != 0)
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



void service_json_str(FILE *f, const char *s)
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

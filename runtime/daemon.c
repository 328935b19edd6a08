/*
 * daemon.c - signals and the pid file (see daemon.h).  Handlers do nothing
 * but call pgqlua_request_stop / pgqlua_request_reload, which set flags and
 * write to the consumer's wake pipe.
 */
#include "daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pgqlua_consumer *signal_consumer;

static void on_stop(int sig)
{
	(void)sig;
	if (signal_consumer)
		pgqlua_request_stop(signal_consumer);
}

static void on_reload(int sig)
{
	(void)sig;
	if (signal_consumer)
		pgqlua_request_reload(signal_consumer);
}

void daemon_install_signals(pgqlua_consumer *c)
{
	struct sigaction sa;
	signal_consumer = c;
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_reload;
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

void daemon_reset_signals(void)
{
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal_consumer = NULL;
}

int daemon_write_pidfile(const char *path, char *err, size_t errlen)
{
	char tmp[4096];
	FILE *f;
	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
	f = fopen(tmp, "w");
	if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0) {
		snprintf(err, errlen, "%s: cannot write pid file: %s", path, strerror(errno));
		if (f)
			unlink(tmp);
		return -1;
	}
	if (rename(tmp, path) != 0) {
		snprintf(err, errlen, "%s: cannot write pid file: %s", path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

void daemon_remove_pidfile(const char *path)
{
	if (path)
		unlink(path);
}

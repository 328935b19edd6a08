/*
 * log.c - the runtime's log lines (see log.h).  Called from every module;
 * the level and file are set by the consumer from its config.
 */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

volatile log_level log_current_level = LOG_LVL_INFO;

static FILE *log_file;          /* NULL: stderr */
static char log_consumer[128];
static long long log_batch;
static int log_syslog_on;
static int log_journal = -1;    /* stderr is the journal: "<N>" prefixes; -1 unknown */

static const int syslog_prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG, LOG_DEBUG};

/* JOURNAL_STREAM=dev:ino names stderr when systemd connected it. */
static int stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) != 0)
		return 0;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_use_syslog(const char *ident)
{
	if (log_syslog_on)
		closelog();
	log_syslog_on = ident != NULL;
	if (ident)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_level_step(int delta)
{
	int lvl = (int)log_current_level + delta;
	if (lvl < LOG_LVL_ERROR)
		lvl = LOG_LVL_ERROR;
	if (lvl > LOG_LVL_MAX)
		lvl = LOG_LVL_MAX;
	log_current_level = (log_level)lvl;
}

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG", "TRACE"};

int log_level_parse(const char *name)
{
	static const char *const lower[] = {"error", "warn", "info", "debug", "trace"};
	if (strcasecmp(name, "warning") == 0)
		return LOG_LVL_WARN;
	for (int i = 0; i <= LOG_LVL_MAX; i++)
		if (strcasecmp(name, lower[i]) == 0)
			return i;
	return -1;
}

const char *log_level_name(log_level lvl)
{
	return level_names[lvl];
}

void log_set_level(log_level lvl)
{
	log_current_level = lvl;
}

int log_open_file(const char *path)
{
	FILE *f;
	if (path == NULL) {
		if (log_file)
			fclose(log_file);
		log_file = NULL;
		return 0;
	}
	f = fopen(path, "a");
	if (f == NULL)
		return -1;
	setvbuf(f, NULL, _IOLBF, 0);
	if (log_file)
		fclose(log_file);
	log_file = f;
	return 0;
}

void log_set_consumer(const char *name)
{
	snprintf(log_consumer, sizeof(log_consumer), "%s", name ? name : "");
}

void log_set_batch(long long batch_id)
{
	log_batch = batch_id;
}

void log_vwrite(log_level lvl, const char *fmt, va_list ap)
{
	char msg[2048], stamp[64], ctx[200] = "";
	struct timeval tv;
	struct tm tm;
	FILE *out = log_file ? log_file : stderr;
	int saved_errno = errno;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	log_fold(msg);

	if (log_consumer[0] && log_batch)
		snprintf(ctx, sizeof(ctx), " consumer=%s batch=%lld", log_consumer, log_batch);
	else if (log_consumer[0])
		snprintf(ctx, sizeof(ctx), " consumer=%s", log_consumer);
	if (log_syslog_on) {
		syslog(syslog_prio[lvl], "%s%s %s", level_names[lvl], ctx, msg);
		errno = saved_errno;
		return;
	}
	if (log_journal < 0)
		log_journal = stderr_is_journal();
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
	if (!log_file && log_journal)
		fprintf(out, "<%d>", syslog_prio[lvl]);
	fprintf(out, "%s.%03d UTC [%d] %s%s %s\n", stamp, (int)(tv.tv_usec / 1000),
	        (int)getpid(), level_names[lvl], ctx, msg);
	fflush(out);
	errno = saved_errno;
}

void log_write(log_level lvl, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vwrite(lvl, fmt, ap);
	va_end(ap);
}

void log_configure(log_level lvl, const char *consumer, const char *logfile, int use_syslog, int syslog_fallback)
{
	log_set_level(lvl);
	log_set_consumer(consumer);
	log_use_syslog(use_syslog || (syslog_fallback && !logfile) ? "pgqlua" : NULL);
	if (!logfile)
		log_open_file(NULL);
	else if (log_open_file(logfile) != 0)
		log_error("cannot open logfile %s: %s; logging to stderr", logfile, strerror(errno));
}

void log_fold(char *s)
{
	char *out = s;
	for (const char *p = s; *p; p++) {
		char ch = (*p == '\n' || *p == '\r' || *p == '\t') ? ' ' : *p;
		if (ch == ' ' && (out == s || out[-1] == ' '))
			continue;
		*out++ = ch;
	}
	while (out > s && out[-1] == ' ')
		out--;
	*out = '\0';
}

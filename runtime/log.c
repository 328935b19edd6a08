/*
 * log.c - the runtime's log lines (see log.h).  Called from every module;
 * the level and file are set by the consumer from its config.
 */
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

log_level log_current_level = LOG_LVL_INFO;

static FILE *log_file;          /* NULL: stderr */
static char log_consumer[128];
static long long log_batch;

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
	for (char *p = msg; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
	if (log_consumer[0] && log_batch)
		snprintf(ctx, sizeof(ctx), " consumer=%s batch=%lld", log_consumer, log_batch);
	else if (log_consumer[0])
		snprintf(ctx, sizeof(ctx), " consumer=%s", log_consumer);
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

/*
 * log.h - one line per message: time with milliseconds, pid, level,
 * consumer and batch, then the message with newlines folded.
 * Used by every runtime module; the sink is stderr or a log file.
 */
#ifndef PGQLUA_LOG_H
#define PGQLUA_LOG_H

#include <stdarg.h>

typedef enum log_level {
	LOG_LVL_ERROR = 0,
	LOG_LVL_WARN,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG,
	LOG_LVL_TRACE
} log_level;

#define LOG_LVL_MAX LOG_LVL_TRACE

extern volatile log_level log_current_level;

/* Parse "error", "warn", "warning", "info", "debug", "trace"; -1 if unknown. */
int log_level_parse(const char *name);
const char *log_level_name(log_level lvl);

void log_set_level(log_level lvl);
/* Open (or reopen) a log file; NULL means stderr.  Returns 0 or -1 (errno). */
int log_open_file(const char *path);

/* Log to syslog (facility daemon) with this ident, or stop doing so (NULL). */
void log_use_syslog(const char *ident);

/* One level more (+1) or less (-1) verbose, within bounds; async-signal-safe. */
void log_level_step(int delta);
void log_set_consumer(const char *name);
/* Newlines and tabs to single spaces, no trailing space: one log line. */
void log_fold(char *s);

/* All of a config's log settings at once: level, consumer name, logfile
 * (NULL: stderr, or syslog when syslog_fallback), syslog. */
void log_configure(log_level lvl, const char *consumer, const char *logfile, int use_syslog, int syslog_fallback);
void log_set_batch(long long batch_id);   /* 0 clears */

void log_write(log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void log_vwrite(log_level lvl, const char *fmt, va_list ap);

#define log_at(lvl, ...) \
	do { if ((lvl) <= log_current_level) log_write((lvl), __VA_ARGS__); } while (0)
#define log_error(...) log_at(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_at(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)  log_at(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_at(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_trace(...) log_at(LOG_LVL_TRACE, __VA_ARGS__)

#endif

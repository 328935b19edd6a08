/*
 * daemon.h - process-level plumbing for the pgqlua program: signal
 * handlers that only forward to the consumer's async-safe requests, and
 * the pid file.  Called by cli.c.
 */
#ifndef PGQLUA_DAEMON_H
#define PGQLUA_DAEMON_H

#include "pgqlua.h"

/* SIGTERM/SIGINT: stop (a second one: stop at once); SIGHUP: reload. */
void daemon_install_signals(pgqlua_consumer *c);
void daemon_reset_signals(void);

/* Write our pid to path (atomically: temp file + rename); 0 or -1 with err. */
int daemon_write_pidfile(const char *path, char *err, size_t errlen);
void daemon_remove_pidfile(const char *path);

#endif

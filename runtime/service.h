/*
 * service.h - the daemon commands of the pgqlua program: run in the
 * foreground, start as a daemon, stop, kill, restart, reload, logmore,
 * logless and status.  Called by cli.c's command table.
 */
#ifndef PGQLUA_SERVICE_H
#define PGQLUA_SERVICE_H

#include "config.h"
#include <stdio.h>

/* `run` (detach == 0) and `start` (detach != 0): returns the exit code. */
int service_run(const char *config_path, int once, int detach);

/* stop, kill, reload, logmore, logless: signal the running consumer. */
int service_signal(const char *config_path, const char *command);

/* status [--json]: 0 running, 3 not running. */
int service_status(const char *config_path, int json);

/* The pid file of a config: its `pidfile`, or CONFIG.pid beside it. */
void service_pidfile(const config *cfg, char *buf, size_t len);

/* The exit code for a config_load failure. */
int service_config_exit(int st);

/* Load the config for a command that does not run the script; on error
 * print one line and return the exit code (0 when loaded). */
int service_load_config(const char *config_path, config **cfg);

/* s as a JSON string, quoted and escaped. */
void service_json_str(FILE *f, const char *s);

#endif

/*
 * cli_int.h - what cli.c (the command table, options, the daemon and
 * seek/peek commands) shares with cli_db.c (the commands that change the
 * queue's database).  Nothing else includes it.
 */
#ifndef PGQLUA_CLI_INT_H
#define PGQLUA_CLI_INT_H

#include "cli.h"
#include "config.h"
#include "pgconn.h"

#define MAX_ARGS 256

typedef struct cli_args {
	const char *command;
	const char *config;
	const char *pos[MAX_ARGS];   /* positional arguments after CONFIG */
	int npos;
	int once;
	int json;
	int help;
} cli_args;

/* One line on stderr pointing at --help; returns EXIT_USAGE. */
int cli_usage_error(const char *fmt, const char *arg);
/* Connect to cfg's db: 0 with *out, or the exit code (said on stderr). */
int cli_connect_config(const config *cfg, pgconn **out);

int cmd_install(cli_args *a);
int cmd_register(cli_args *a);
int cmd_unregister(cli_args *a);
int cmd_failed(cli_args *a);
int cmd_resize(cli_args *a);

#endif

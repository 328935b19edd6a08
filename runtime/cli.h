/*
 * cli.h - the pgqlua program's command table: `pgqlua COMMAND CONFIG [args]`.
 * main.c calls cli_main and exits with what it returns.
 */
#ifndef PGQLUA_CLI_H
#define PGQLUA_CLI_H

/* Exit codes (sysexits.h values), stable: documented in README.md. */
enum cli_exit {
	EXIT_OK_ = 0,
	EXIT_PARTIAL = 1,       /* some of the given event ids were not found */
	EXIT_RUNNING = 2,       /* start/run: the consumer is already running */
	EXIT_NOT_RUNNING = 3,   /* status, reload, logmore, logless: not running (LSB) */
	EXIT_USAGE = 64,        /* bad command line */
	EXIT_SCRIPT = 65,       /* the script does not load, lacks process_event, init fails */
	EXIT_NOINPUT = 66,      /* the config file cannot be read */
	EXIT_DB = 69,           /* the database cannot be reached or PgQ refused */
	EXIT_INTERNAL = 70,     /* out of memory or an unexpected failure */
	EXIT_CANTCREAT = 73,    /* the pid file cannot be written */
	EXIT_TEMPFAIL = 75,     /* run --once: a batch was rolled back and comes again */
	EXIT_CONFIG = 78        /* the config file is invalid */
};

int cli_main(int argc, char **argv);

/* The exit code for a config that did not load: 66 unreadable, 70 out of
 * memory, 78 invalid (config_status from config.h, as an int). */
int cli_config_exit(int config_status);

#endif

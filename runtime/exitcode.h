/*
 * exitcode.h - the pgqlua program's exit codes (sysexits.h values),
 * stable and documented in README.md.  Used by cli.c and service.c.
 */
#ifndef PGQLUA_EXITCODE_H
#define PGQLUA_EXITCODE_H

enum exit_code {
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

#endif

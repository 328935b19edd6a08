/*
 * pgconn_int.h - the inside of a pgconn, shared by pgconn.c (connect,
 * plain and async statements) and pgpipe.c (prepared statements, the
 * pipeline).  Nothing else includes it.
 */
#ifndef PGQLUA_PGCONN_INT_H
#define PGQLUA_PGCONN_INT_H

#include "pgconn.h"

#define STMT_MAX 128          /* prepared statements kept per connection */

typedef struct stmt_entry {
	char *sql;                /* NULL: a free slot */
	unsigned long hash;
	long id;                  /* its name is pgqlua_<id>; ids are never reused */
} stmt_entry;

struct pgconn {
	char *conninfo;
	char *timezone;              /* the session's TimeZone */
	PGconn *pg;
	PGcancel *volatile cancel;   /* read by signal handlers */
	char safe_name[256];
	int prepare;                 /* keep statements prepared */
	stmt_entry stmts[STMT_MAX];
	int last_slot;               /* the slot found last */
	long next_id;
	/* commands in the pipeline since its last sync: the statement slot
	 * (-1: unnamed) and whether the command is its Parse */
	int *seg_slot;
	unsigned char *seg_parse;
	int nseg, capseg;
	/* pgconn_send_async: a statement in flight, then its result */
	int async;
	PGresult *async_res;
	char async_err[512];
};

/* A statement put the connection into COPY: end it.  0, or -1 when the
 * connection had to be closed. */
int pgconn_refuse_copy(pgconn *c, ExecStatusType st);
int pgconn_is_copy(ExecStatusType st);
/* Read the result of the statement in flight (pgconn_send_async), if any,
 * so that the connection can take another one. */
void pgconn_settle(pgconn *c);
/* Free a prepared statement's slot. */
void pgconn_stmt_forget(pgconn *c, int slot);

#endif

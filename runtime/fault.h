/*
 * fault.h - fault points for the fault-injection tests: with
 * PGQLUA_FAULT_INJECTION built in, PGQLUA_FAULT=point kills the process
 * with SIGKILL when it passes that point, as a crash would (fault_cut:
 * cuts the connection instead).  Compiled out otherwise.
 */
#ifndef PGQLUA_FAULT_H
#define PGQLUA_FAULT_H

#include "pgconn.h"

#ifdef PGQLUA_FAULT_INJECTION
#include "log.h"
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static inline void fault_point(const char *point)
{
	const char *f = getenv("PGQLUA_FAULT");
	if (f && strcmp(f, point) == 0) {
		log_warn("fault injection: killed at %s", point);
		raise(SIGKILL);
	}
}

/* PGQLUA_FAULT=point: a segmentation fault when the event's data is
 * "segv", as a crash in a C library would. */
static inline void fault_segv(const char *point, const char *ev_data)
{
	const char *f = getenv("PGQLUA_FAULT");
	if (f && strcmp(f, point) == 0 && strcmp(ev_data, "segv") == 0) {
		log_warn("fault injection: segmentation fault at %s", point);
		raise(SIGSEGV);
	}
}

/* PGQLUA_FAULT=point: the first time the process passes the point, the
 * connection's socket is shut down, as a network failure would. */
static inline void fault_cut(pgconn *c, const char *point)
{
	static int fired;
	const char *f = getenv("PGQLUA_FAULT");
	if (!fired && f && strcmp(f, point) == 0 && pgconn_pg(c)) {
		fired = 1;
		log_warn("fault injection: connection cut at %s", point);
		shutdown(PQsocket(pgconn_pg(c)), SHUT_RDWR);
	}
}
#else
#define fault_point(point) ((void)0)
#define fault_cut(conn, point) ((void)(conn))
#define fault_segv(point, ev_data) ((void)(ev_data))
#endif

#endif

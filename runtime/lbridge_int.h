/*
 * lbridge_int.h - the inside of an lb_script, shared by lbridge.c (state,
 * allocator, the protected call, load) and lbcall.c (the calls into a
 * loaded script).  Nothing else includes it.
 */
#ifndef PGQLUA_LBRIDGE_INT_H
#define PGQLUA_LBRIDGE_INT_H

#include "lbridge.h"
#include "lhttp.h"
#include <lua.h>
#include <signal.h>

struct lb_script {
	lua_State *L;
	const config *cfg;
	ldb_state *db;
	size_t mem_used;
	size_t mem_limit;          /* 0: none */
	int hit_limit;             /* an allocation was refused for the limit */
	double deadline;           /* monotonic seconds; 0: none */
	double timeout;            /* the limit being enforced, for messages */
	int ref_process_event;
	int ref_init;
	int ref_batch_start;
	int ref_batch_end;
	int ref_db;
	int ref_null;
	int ref_ev_keys;
	int ref_map_result;        /* pgqlua.rules: results other than OK */
	int ref_retries_used_up;   /* pgqlua.rules: the max_retries rule */
	int ref_where;             /* where_process_event, for map_result */
	int ref_settle;            /* pgqlua.http.settle: sends into an outcome */
	lua_Integer code_ok;       /* pgqlua.rules.EVENT_OK */
	lhttp *http;               /* pgq.http's transport */
	volatile sig_atomic_t interrupted; /* lb_interrupt was called */
	char wait_msg[160];        /* why a C wait ended */
};

/* The script whose state L is (the allocator's userdata). */
lb_script *lb_script_of(lua_State *L);

/* The one protected-call path: f(ud) under lua_pcall with a traceback
 * handler, the deadline hook when timeout > 0, the memory limit.  On
 * success the nres results are above *base; on failure err holds the
 * message's first part (the traceback goes to the debug log).  Returns
 * the lua_pcall status. */
int lb_docall(lb_script *s, lua_CFunction f, void *ud, int nres, double timeout, int *base, char *err,
              size_t errlen);

/* The ev table's keys as interned strings in the registry (at load). */
void lb_make_ev_keys(lua_State *L, lb_script *s);

#endif

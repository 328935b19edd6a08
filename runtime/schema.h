/*
 * schema.h - the runtime's own schema `pgqlua`: its DDL, run by `pgqlua
 * install` (cli.c) in one transaction under an advisory lock, and the
 * ownership check that remote.c's target DDL runs first too.
 */
#ifndef PGQLUA_SCHEMA_H
#define PGQLUA_SCHEMA_H

#include "pgconn.h"

/* SQL that raises 42501 when schema pgqlua, or a function, table or other
 * relation in it, belongs to another role than the current one (whose
 * code would otherwise run on every tick or failed event): the first
 * statement of every install of schema pgqlua (here and remote.c). */
extern const char schema_owner_check_sql[];

/* Create schema pgqlua and the failed-event table if missing
 * (idempotent); refused (42501) when they belong to another role. */
int schema_install(pgconn *c, char *err, size_t errlen);

/* The tick NOTIFY trigger on pgq.tick (needs the owner of pgq.tick). */
int schema_install_wakeup(pgconn *c, char *err, size_t errlen);

#endif

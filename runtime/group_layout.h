/*
 * group_layout.h - a consumer group's layout in the queue's database
 * (group_layout.c): the table pgqlua.group_layout keeps how many
 * partitions each group has now.  Called by group.c (members follow it),
 * resize.c (changes it), cli_db.c (install, register, unregister) and
 * monitor.c (status, check, munin).
 */
#ifndef PGQLUA_GROUP_LAYOUT_H
#define PGQLUA_GROUP_LAYOUT_H

#include "config.h"
#include "pgconn.h"

#include <stddef.h>

/* The group's layout: how many partitions it has now.  `partitions:` is
 * the count `install` starts with; `pgqlua resize` changes it and records
 * it in pgqlua.group_layout, where members, status and the commands read
 * it (the config file keeps its first value).  group_layout_read sets *n
 * (cfg's own count when ungrouped, or when nothing is recorded); 0, or -1
 * with err.  group_layout_apply puts it into cfg->partitions. */
int group_layout_read(pgconn *c, const config *cfg, int *n, char *err, size_t errlen);
/* The same, and the layout's generation (one more at every resize; 0
 * when nothing is recorded). */
int group_layout_read_gen(pgconn *c, const config *cfg, int *n, long long *generation, char *err, size_t errlen);
int group_layout_apply(pgconn *c, config *cfg, char *err, size_t errlen);
/* install: record cfg's count unless one is recorded; unregister: forget
 * it.  0 or -1 with err. */
int group_layout_record(pgconn *c, const config *cfg, char *err, size_t errlen);
int group_layout_forget(pgconn *c, const config *cfg, char *err, size_t errlen);

#endif

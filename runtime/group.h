/*
 * group.h - consumer groups (group.c): a consumer with `partitions: N` is
 * N PgQ consumers NAME.pIofN on the queue, each seeing its share of every
 * batch (a server-side filter on the partition key), shared among the
 * members that run the config through session advisory locks on each
 * member's connection.  Called by consumer.c (the partitions at open),
 * loop.c (claims and balance between batches) and the CLI (install,
 * status, check).
 */
#ifndef PGQLUA_GROUP_H
#define PGQLUA_GROUP_H

#include "config.h"
#include "pgconn.h"

#include <stddef.h>

/* How many PgQ consumers the config stands for: partitions, or 1. */
int group_size(const config *cfg);

/* The PgQ consumer of partition i: NAME.pIofN, or the consumer's own name
 * when ungrouped.  malloc'd; NULL when out of memory. */
char *group_part_name(const config *cfg, int i);

/* The batch cursor filter of partition i (pgq_open_batch's where):
 * event_filter and, in a group, the partition's share.  malloc'd; NULL
 * with *oom 0 when every event is read. */
char *group_part_where(const config *cfg, int i, int *oom);

/* SQL for the partition (0 .. n-1) of the event whose columns are in
 * scope, among n partitions: partition_key hashed (NULL: 0).  malloc'd;
 * NULL when out of memory. */
char *group_key_index_sql(const config *cfg, int n);

/* A joint batch's cursor filter (pgq_open_batch): event_filter, and the
 * row's partition (its column pgqlua_part) one of the n in idx.
 * malloc'd; NULL when out of memory. */
char *group_joint_where(const config *cfg, const int *idx, int n);

/* The PgQ consumers' names as a Postgres array literal ("{\"a\",\"b\"}"),
 * malloc'd; NULL when out of memory. */
char *group_names_array(const config *cfg);
/* n names as a Postgres array literal; malloc'd, NULL when out of memory. */
char *group_names_literal(char *const *names, int n);

/* Register every partition not registered yet, all at one tick (the
 * queue's latest, or the earliest of the partitions already registered),
 * in one transaction.  The number newly registered, or -1 with err. */
int group_register(pgconn *c, const config *cfg, char *err, size_t errlen);

/* How many of the partitions are registered, or -1 with err. */
int group_registered(pgconn *c, const config *cfg, char *err, size_t errlen);

/* Unregister every partition; the number unregistered or -1 with err. */
int group_unregister(pgconn *c, const config *cfg, char *err, size_t errlen);

/* A member's name in the group: HOST:PID. */
void group_member_id(char *buf, size_t len);

/* SQL that names this connection as a member of cfg's group (its
 * application_name), for `status` and for the balance. */
void group_member_sql(const config *cfg, const char *member, char *buf, size_t len);

/* Who holds what, as the server sees it now. */
typedef struct group_view {
	int nparts;
	char **owner;       /* per partition: the member (HOST:PID), "pid N", or NULL: no owner */
	int nmembers;
	char **members;     /* every member connected, those without partitions too */
} group_view;

int group_view_read(pgconn *c, const config *cfg, group_view *v, char *err, size_t errlen);
void group_view_free(group_view *v);

#endif

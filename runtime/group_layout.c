/*
 * group_layout.c - the group's layout row in pgqlua.group_layout (see
 * group_layout.h); a database installed before the table has none, and
 * the config's count holds.
 */
#include "group_layout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int group_layout_read_gen(pgconn *c, const config *cfg, int *n, long long *generation, char *err, size_t errlen)
{
	const char *p[2] = {cfg->queue_name, cfg->consumer_name};
	PGresult *res;
	*n = cfg->partitions;
	*generation = 0;
	if (cfg->partitions <= 0)
		return 0;
	res = pgconn_exec(c, "select partitions, generation from pgqlua.group_layout where queue_name = $1 and consumer_name = $2",
	                  2, p, err, errlen);
	if (!res)
		return strstr(err, "42P01") && pgconn_is_ok(c) ? 0 : -1;   /* installed before the table: the config's */
	if (PQntuples(res) == 1) {
		*n = atoi(PQgetvalue(res, 0, 0));
		*generation = atoll(PQgetvalue(res, 0, 1));
	}
	PQclear(res);
	return 0;
}

int group_layout_read(pgconn *c, const config *cfg, int *n, char *err, size_t errlen)
{
	long long generation;
	return group_layout_read_gen(c, cfg, n, &generation, err, errlen);
}

int group_layout_apply(pgconn *c, config *cfg, char *err, size_t errlen)
{
	int n;
	if (group_layout_read(c, cfg, &n, err, errlen) != 0)
		return -1;
	cfg->partitions = n;
	return 0;
}

static int exec_cmd(pgconn *c, const char *sql, int n, const char *const *p, char *err, size_t errlen)
{
	PGresult *res = pgconn_exec(c, sql, n, p, err, errlen);
	if (!res)
		return -1;
	PQclear(res);
	return 0;
}

int group_layout_record(pgconn *c, const config *cfg, char *err, size_t errlen)
{
	const char *p[2] = {cfg->queue_name, cfg->consumer_name};
	char n[16];
	const char *q[3] = {p[0], p[1], n};
	snprintf(n, sizeof(n), "%d", cfg->partitions);
	if (cfg->partitions <= 0)
		return 0;
	return exec_cmd(c,
	                       "insert into pgqlua.group_layout (queue_name, consumer_name, partitions)"
	                       " values ($1, $2, $3) on conflict do nothing",
	                       3, q, err, errlen);
}

int group_layout_forget(pgconn *c, const config *cfg, char *err, size_t errlen)
{
	const char *p[2] = {cfg->queue_name, cfg->consumer_name};
	return exec_cmd(c, "delete from pgqlua.group_layout where queue_name = $1 and consumer_name = $2", 2,
	                       p, err, errlen);
}

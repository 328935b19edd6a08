/*
 * joint.c - a joint batch (see joint.h): the batches of the partitions one
 * member holds, taken at the same ticks and run as one.
 */
#include "joint.h"
#include "batch.h"
#include "group.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>

/* The held partitions' batches at the lead's ticks (the earliest ticks
 * any of them has) run as one joint batch: one cursor reads the events of
 * all of them (each row with its partition), the script sees them in
 * ev_id order, and one commit finishes every batch.  A partition behind
 * the others runs alone until it has caught up with them. */
static pgqlua_status run_joint(pgqlua_consumer *c, consumer_part **held, const int *idx, int n,
                              pgq_batch *bs, int lead)
{
	long long subs[JOINT_MAX];
	int in[JOINT_MAX], parts[JOINT_MAX], k = 0;
	char *sql = NULL;
	pgqlua_status st;
	pgq_batch b;

	for (int i = 0; i < n; i++)
		if (bs[i].batch_id && bs[i].prev_tick_id == bs[lead].prev_tick_id &&
		    bs[i].cur_tick_id == bs[lead].cur_tick_id) {
			subs[k] = bs[i].sub_id;
			in[k++] = i;
		}
	if (k > 1)
		sql = pgq_joint_sql(bs[lead].sql, bs[lead].sub_id, subs, k);
	if (!sql)
		return loop_run_one(c, held[lead], &bs[lead]);
	for (int j = 0; j < k; j++) {
		held[in[j]]->joint_batch = bs[in[j]].batch_id;
		parts[j] = idx[in[j]];
	}
	c->joint_where = group_joint_where(c->cfg, parts, k);
	c->joint_part = group_key_index_sql(c->cfg, c->cfg->partitions);
	if (!c->joint_where || !c->joint_part) {
		st = PGQLUA_ERR_INTERNAL;
		snprintf(c->last_error, sizeof(c->last_error), "out of memory");
	} else {
		b = bs[lead];
		b.sql = sql;
		c->njoint = k;
		log_set_batch(b.batch_id);
		log_debug("joint batch of %d partitions: batches %lld.., ticks %lld to %lld", k, b.batch_id,
		          b.prev_tick_id, b.cur_tick_id);
		c->part = held[lead];
		st = batch_run(c, &b);
		c->part = NULL;
		c->njoint = 0;
	}
	for (int j = 0; j < k; j++)
		held[in[j]]->joint_batch = 0;
	free(c->joint_where);
	free(c->joint_part);
	c->joint_where = c->joint_part = NULL;
	free(sql);
	return st;
}

pgqlua_status joint_run(pgqlua_consumer *c, consumer_part **held, const int *idx, int n)
{
	pgq_batch_knobs k = {c->cfg->batch_min_count, c->cfg->batch_min_interval, c->cfg->batch_min_lag};
	char err[PGCONN_ERR_LEN], *names[JOINT_MAX], *arr;
	pgq_batch bs[JOINT_MAX];
	pgqlua_status st;
	pgq_result r;
	int lead = -1;

	for (int i = 0; i < n; i++) {
		if (held[i]->next_known == NEXT_READY)
			free(held[i]->next.sql);   /* still open: next_batch returns it again */
		held[i]->next_known = NEXT_UNKNOWN;
		names[i] = held[i]->name;
	}
	if (!(arr = group_names_literal(names, n))) {
		snprintf(c->last_error, sizeof(c->last_error), "out of memory");
		return PGQLUA_ERR_INTERNAL;
	}
	r = pgq_next_batches(c->conn, c->cfg->queue_name, arr, n, &k, bs, &lead, err, sizeof(err));
	free(arr);
	if (r == PGQ_ERROR) {
		if (lead >= 0)
			free(bs[lead].sql);
		return loop_next_batch_failed(c, err);
	}
	c->polled = 1;
	if (r == PGQ_NONE || lead < 0)
		return PGQLUA_NO_BATCH;
	st = run_joint(c, held, idx, n, bs, lead);
	free(bs[lead].sql);
	return st;
}

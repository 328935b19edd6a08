/*
 * group.c - consumer groups (see group.h): partition names and filters,
 * registration at one tick, who owns what (pg_locks), and a member's
 * claims and balance between batches (group_balance, for loop.c).
 */
#include "group.h"
#include "group_layout.h"
#include "clock.h"
#include "consumer_state.h"
#include "log.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BALANCE_PERIOD 0.5   /* seconds between two looks at the owners */
#define RECLAIM_DELAY 5.0    /* a partition given up is not taken back sooner */
#define UNOWNED_GRACE 2.0    /* then any member with room takes an unowned one */

/* The default partition key: for pgq's trigger events the table and the
 * primary key's values, so that every change of one row goes to one
 * partition (logutriga: ev_type "I:pk1,pk2", ev_data urlencoded;
 * jsontriga: ev_type a JSON object with "pkey", ev_data JSON; sqltriga:
 * ev_type "I", "U" or "D" with no key: the table alone); any other event
 * (and any without ev_extra1) its ev_id. */
static const char default_key[] =
	"case"
	" when ev_extra1 is null then ev_id::text"   /* plain events first: the cheap case */
	" when ev_type ~ '^[IUD]:' then ev_extra1 || '|' || coalesce((select string_agg(coalesce(kv.v, ''), '&' order by t.o)"
	"  from unnest(string_to_array(substr(ev_type, 3), ',')) with ordinality t(k, o)"
	"  left join lateral (select split_part(x, '=', 2) v from unnest(string_to_array(ev_data, '&')) x"
	"   where split_part(x, '=', 1) = t.k limit 1) kv on true), '')"
	" when ev_type like '{\"op\":%' then ev_extra1 || '|' || coalesce((select string_agg(coalesce(ev_data::json ->> t.k, ''), '&' order by t.o)"
	"  from json_array_elements_text(ev_type::json -> 'pkey') with ordinality t(k, o)), '')"
	" when ev_type in ('I', 'U', 'D') then ev_extra1"
	" else ev_id::text end";

int group_size(const config *cfg)
{
	return cfg->partitions > 0 ? cfg->partitions : 1;
}

char *group_part_name(const config *cfg, int i)
{
	char *s;
	size_t n = strlen(cfg->consumer_name) + 32;
	if (cfg->partitions <= 0)
		return strdup(cfg->consumer_name);
	if ((s = malloc(n)))
		snprintf(s, n, "%s.p%dof%d", cfg->consumer_name, i, cfg->partitions);
	return s;
}

char *group_key_index_sql(const config *cfg, int n)
{
	const char *key = cfg->partition_key ? cfg->partition_key : default_key;
	size_t len = strlen(key) + 96;
	char *s = malloc(len);
	/* hashtext is an int4: shifted to 0 .. 2^32-1 before the modulo; a
	 * NULL key goes to partition 0.  The newlines end `--` comments. */
	if (s)
		snprintf(s, len, "coalesce(mod(hashtext((\n%s\n)::text)::int8 + 2147483648, %d), 0)", key, n);
	return s;
}

char *group_part_where(const config *cfg, int i, int *oom)
{
	size_t n;
	char *s, *idx;

	*oom = 0;
	if (cfg->partitions <= 0 && !cfg->event_filter)
		return NULL;
	if (cfg->partitions <= 0) {
		if (!(s = strdup(cfg->event_filter)))
			*oom = 1;
		return s;
	}
	if (!(idx = group_key_index_sql(cfg, cfg->partitions))) {
		*oom = 1;
		return NULL;
	}
	n = strlen(idx) + (cfg->event_filter ? strlen(cfg->event_filter) : 0) + 32;
	if (!(s = malloc(n))) {
		free(idx);
		*oom = 1;
		return NULL;
	}
	snprintf(s, n, "%s%s%s%s = %d", cfg->event_filter ? "(\n" : "", cfg->event_filter ? cfg->event_filter : "",
	         cfg->event_filter ? "\n) and " : "", idx, i);
	free(idx);
	return s;
}

char *group_joint_where(const config *cfg, const int *idx, int n)
{
	size_t cap = (cfg->event_filter ? strlen(cfg->event_filter) : 0) + (size_t)n * 12 + 48;
	char *s = malloc(cap), *o;

	if (!s)
		return NULL;
	o = s;
	if (cfg->event_filter)
		o += sprintf(o, "(\n%s\n) and ", cfg->event_filter);
	o += sprintf(o, "pgqlua_part in (");
	for (int i = 0; i < n; i++)
		o += sprintf(o, "%s%d", i ? ", " : "", idx[i]);
	strcpy(o, ")");
	return s;
}

char *group_names_literal(char *const *names, int n)
{
	size_t cap = 3, used = 1;
	char *s;

	for (int i = 0; i < n; i++)
		cap += 2 * strlen(names[i]) + 3;
	if (!(s = malloc(cap)))
		return NULL;
	s[0] = '{';
	for (int i = 0; i < n; i++) {
		if (i)
			s[used++] = ',';
		s[used++] = '"';
		for (const char *p = names[i]; *p; p++) {
			if (*p == '"' || *p == '\\')
				s[used++] = '\\';
			s[used++] = *p;
		}
		s[used++] = '"';
	}
	s[used++] = '}';
	s[used] = '\0';
	return s;
}

char *group_names_array(const config *cfg)
{
	int n = group_size(cfg), got = 0;
	char **names = calloc((size_t)n, sizeof(*names)), *s = NULL;

	if (!names)
		return NULL;
	while (got < n && (names[got] = group_part_name(cfg, got)))
		got++;
	if (got == n)
		s = group_names_literal(names, n);
	for (int i = 0; i < got; i++)
		free(names[i]);
	free(names);
	return s;
}

static int names_exec_count(pgconn *c, const config *cfg, const char *sql, char *err, size_t errlen)
{
	char *arr = group_names_array(cfg);
	const char *p[2] = {cfg->queue_name, arr};
	PGresult *res;
	int n;
	if (!arr) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	res = pgconn_exec(c, sql, 2, p, err, errlen);
	free(arr);
	if (!res)
		return -1;
	n = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	return n;
}

int group_register(pgconn *c, const config *cfg, char *err, size_t errlen)
{
	/* one statement: one snapshot, one tick for every new partition */
	return names_exec_count(c, cfg,
	                        "with q as (select queue_id from pgq.queue where queue_name = $1),"
	                        " have as (select co.co_name, s.sub_last_tick from pgq.subscription s"
	                        "  join pgq.consumer co on co.co_id = s.sub_consumer join q on q.queue_id = s.sub_queue"
	                        "  where co.co_name = any($2::text[])),"
	                        " at as (select coalesce((select min(sub_last_tick) from have),"
	                        "  (select max(tick_id) from pgq.tick t join q on t.tick_queue = q.queue_id)) tick)"
	                        " select count(pgq.register_consumer_at($1, n, (select tick from at)))"
	                        " from unnest($2::text[]) n where n not in (select co_name from have)",
	                        err, errlen);
}

/* The subscriptions of the partitions named in $2 on queue $1. */
#define GROUP_SUBSCRIPTIONS \
	" from pgq.subscription s join pgq.consumer co on co.co_id = s.sub_consumer" \
	" join pgq.queue q on q.queue_id = s.sub_queue where q.queue_name = $1 and co.co_name = any($2::text[])"

int group_registered(pgconn *c, const config *cfg, char *err, size_t errlen)
{
	return names_exec_count(c, cfg,
	                        "select count(*)" GROUP_SUBSCRIPTIONS,
	                        err, errlen);
}

int group_unregister(pgconn *c, const config *cfg, char *err, size_t errlen)
{
	return names_exec_count(c, cfg,
	                        "select count(pgq.unregister_consumer($1, co.co_name))" GROUP_SUBSCRIPTIONS,
	                        err, errlen);
}

void group_member_id(char *buf, size_t len)
{
	char host[256];
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	/* application_name keeps 63 bytes: the host gives way to the pid */
	snprintf(buf, len, "%.36s:%d", host, (int)getpid());
}

/* "pgqlua/XXXXXXXX ": the application_name prefix of cfg's group (a hash
 * of queue and consumer: names of any length fit). */
static void member_prefix(const config *cfg, char *buf, size_t len)
{
	uint32_t h = 2166136261u;
	for (const char *p = cfg->queue_name; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	h = (h ^ '/') * 16777619u;
	for (const char *p = cfg->consumer_name; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	snprintf(buf, len, "pgqlua/%08x ", (unsigned)h);
}

void group_member_sql(const config *cfg, const char *member, char *buf, size_t len)
{
	char prefix[32];
	member_prefix(cfg, prefix, sizeof(prefix));
	snprintf(buf, len, "set application_name = '%s%s'", prefix, member);
}

int group_view_read(pgconn *c, const config *cfg, group_view *v, char *err, size_t errlen)
{
	char prefix[32], *arr = group_names_array(cfg);
	const char *p[3];
	PGresult *res;
	int rows;

	memset(v, 0, sizeof(*v));
	member_prefix(cfg, prefix, sizeof(prefix));
	p[0] = arr;
	p[1] = cfg->queue_name;
	p[2] = prefix;
	if (!arr) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	/* members: connections named by the group's prefix; owners: the
	 * holders of the partitions' claims (pgq_claim's two-key locks) */
	res = pgconn_exec(c,
	                  "select null::int8, substr(a.application_name, length($3) + 1) from pg_stat_activity a"
	                  " where a.datname = current_database() and left(a.application_name, length($3)) = $3"
	                  " union all"
	                  " select p.i - 1, coalesce(substr(a.application_name, length($3) + 1), 'pid ' || l.pid)"
	                  " from unnest($1::text[]) with ordinality p(name, i)"
	                  " join pg_locks l on l.locktype = 'advisory' and l.granted and l.objsubid = 2"
	                  "  and l.database = (select oid from pg_database where datname = current_database())"
	                  "  and l.classid::int8 = (hashtext('pgqlua/' || $2)::int8 & 4294967295)"
	                  "  and l.objid::int8 = (hashtext(p.name)::int8 & 4294967295)"
	                  " left join pg_stat_activity a on a.pid = l.pid"
	                  "  and left(a.application_name, length($3)) = $3",
	                  3, p, err, errlen);
	free(arr);
	if (!res)
		return -1;
	rows = PQntuples(res);
	v->nparts = group_size(cfg);
	v->owner = calloc((size_t)v->nparts, sizeof(char *));
	v->members = calloc((size_t)rows + 1, sizeof(char *));
	if (!v->owner || !v->members)
		goto oom;
	for (int r = 0; r < rows; r++) {
		char *s = strdup(PQgetvalue(res, r, 1));
		if (!s)
			goto oom;
		if (PQgetisnull(res, r, 0))
			v->members[v->nmembers++] = s;
		else {
			int i = atoi(PQgetvalue(res, r, 0));
			if (i >= 0 && i < v->nparts && !v->owner[i])
				v->owner[i] = s;
			else
				free(s);
		}
	}
	PQclear(res);
	return 0;
oom:
	PQclear(res);
	group_view_free(v);
	snprintf(err, errlen, "out of memory");
	return -1;
}

void group_view_free(group_view *v)
{
	for (int i = 0; v->owner && i < v->nparts; i++)
		free(v->owner[i]);
	for (int i = 0; v->members && i < v->nmembers; i++)
		free(v->members[i]);
	free(v->owner);
	free(v->members);
	memset(v, 0, sizeof(*v));
}

/* ---- a member's claims (loop.c calls group_balance between batches) */

static void forget_next(consumer_part *p)
{
	if (p->next_known == NEXT_READY)
		free(p->next.sql);
	p->next_known = NEXT_UNKNOWN;
}

void group_claims_lost(pgqlua_consumer *c)
{
	for (int i = 0; i < c->nparts; i++) {
		c->parts[i].claimed = 0;
		forget_next(&c->parts[i]);
	}
	c->next_balance = 0;
}

static int owned_by(const group_view *v, const char *member)
{
	int n = 0;
	for (int i = 0; i < v->nparts; i++)
		n += v->owner[i] && strcmp(v->owner[i], member) == 0;
	return n;
}

/* Give up one partition (the last one held), between batches. */
static pgqlua_status give_up(pgqlua_consumer *c, int members, const char *why)
{
	char err[PGCONN_ERR_LEN];
	for (int i = c->nparts - 1; i >= 0; i--) {
		consumer_part *p = &c->parts[i];
		if (!p->claimed)
			continue;
		if (pgq_release(c->conn, c->cfg->queue_name, p->name, err, sizeof(err)) != 0)
			return consumer_db_failure(c, "giving up a partition", err);
		p->claimed = 0;
		forget_next(p);
		p->released_at = clock_mono();
		log_info("gave up partition %s (%s; %d members)", p->name, why, members);
		return PGQLUA_OK;
	}
	return PGQLUA_OK;
}

int group_follow_layout(pgqlua_consumer *c)
{
	char err[PGCONN_ERR_LEN];
	int n, old = c->nparts;
	long long gen;
	if (group_layout_read_gen(c->conn, c->cfg, &n, &gen, err, sizeof(err)) != 0) {
		consumer_db_failure(c, "reading the group's layout", err);
		return -1;
	}
	if (c->layout_gen < 0 && n == old)
		c->layout_gen = gen;   /* the first look: the layout this member started with */
	if ((n == old && gen == c->layout_gen) || n <= 0)
		return 0;
	/* the old partitions are finished and unregistered: their claims
	 * guard nothing any more */
	for (int i = 0; i < c->nparts; i++)
		if (c->parts[i].claimed && pgq_release(c->conn, c->cfg->queue_name, c->parts[i].name, err, sizeof(err)) != 0) {
			consumer_db_failure(c, "giving up a partition of the old layout", err);
			return -1;
		}
	if (consumer_parts_reset(c, n) != 0) {
		snprintf(c->last_error, sizeof(c->last_error), "out of memory");
		return -2;
	}
	c->layout_gen = gen;
	log_info("group %s was resized from %d to %d partitions: taking up the new layout", c->cfg->consumer_name, old, n);
	return 1;
}

/* A member holding no partition is a standby (status shows it). */
static void tell_role(pgqlua_consumer *c)
{
	int mine = 0;
	for (int i = 0; i < c->nparts; i++)
		mine += c->parts[i].claimed;
	if (mine == 0 && !c->standby) {
		log_info("member %s holds no partition of group %s: waiting", c->member, c->cfg->consumer_name);
		consumer_tell(c, NOTE_STANDBY, NULL);
		c->standby = 1;
	} else if (mine > 0 && c->standby) {
		consumer_tell(c, NOTE_ACTIVE, NULL);
		c->standby = 0;
	}
}

pgqlua_status group_balance(pgqlua_consumer *c)
{
	char err[PGCONN_ERR_LEN];
	double now = clock_mono();
	int n = c->nparts, members, mine = 0, min, max = 0, hi, lo, unowned = 0, first_max = 1, r0;
	group_view v;
	pgqlua_status st = PGQLUA_OK;

	if (now < c->next_balance)
		return PGQLUA_OK;
	c->next_balance = now + BALANCE_PERIOD;
	if ((r0 = group_follow_layout(c)) < 0)
		return r0 == -1 ? PGQLUA_ERR_DB : PGQLUA_ERR_INTERNAL;
	n = c->nparts;
	if (group_view_read(c->conn, c->cfg, &v, err, sizeof(err)) != 0)
		return consumer_db_failure(c, "reading the group's members and owners", err);
	c->polled = 1;
	min = n;
	for (int i = 0; i < n; i++) {
		mine += c->parts[i].claimed;
		unowned += !v.owner[i];
	}
	members = v.nmembers > 0 ? v.nmembers : 1;
	/* just started: the siblings under the same parent count before
	 * they have connected, so that no member takes the whole group for
	 * its first (joint) batch */
	if (c->joined_at == 0)
		c->joined_at = now;
	if (!c->once && now - c->joined_at < UNOWNED_GRACE && members < c->cfg->workers)
		members = c->cfg->workers;
	for (int m = 0; m < v.nmembers; m++) {
		int k = strcmp(v.members[m], c->member) == 0 ? mine : owned_by(&v, v.members[m]);
		if (k < min)
			min = k;
		if (k > max)
			max = k;
	}
	if (mine < min)
		min = mine;
	/* the first member (by name) among those holding the most gives way */
	for (int m = 0; m < v.nmembers; m++)
		if (strcmp(v.members[m], c->member) < 0 && owned_by(&v, v.members[m]) == max)
			first_max = 0;
	hi = (n + members - 1) / members;
	lo = n / members;
	if (c->once) {
		/* run --once drains what it holds and exits: it takes every
		 * unowned partition and gives none up (none would be left behind) */
		hi = n;
		lo = n;
		min = mine;
		first_max = 0;
	}
	c->unowned_since = unowned ? (c->unowned_since > 0 ? c->unowned_since : now) : 0;
	if (mine > hi) {
		/* all of the surplus at once: a member's batches run its held
		 * partitions together (a joint batch), so the next look may be a
		 * while away */
		for (; mine > hi && st == PGQLUA_OK; mine--)
			st = give_up(c, members, "more than its share");
	}
	else if (!unowned && mine > lo && mine == max && min < lo && first_max)
		st = give_up(c, members, "a member has less than its share");
	else if (unowned && mine < hi && (mine <= min || now - c->unowned_since >= UNOWNED_GRACE)) {
		for (int i = 0; i < n && mine < hi; i++) {
			consumer_part *p = &c->parts[i];
			pgq_result r;
			if (v.owner[i] || p->claimed || (p->released_at > 0 && now - p->released_at < RECLAIM_DELAY))
				continue;
			r = pgq_claim(c->conn, c->cfg->queue_name, p->name, err, sizeof(err));
			if (r == PGQ_ERROR) {
				st = consumer_db_failure(c, "claiming a partition", err);
				break;
			}
			if (r == PGQ_DONE) {
				p->claimed = 1;
				p->next_known = NEXT_UNKNOWN;
				mine++;
				log_info("took partition %s (%d members, %d partitions held)", p->name, members, mine);
			}
		}
	}
	group_view_free(&v);
	if (st == PGQLUA_OK)
		tell_role(c);
	return st;
}

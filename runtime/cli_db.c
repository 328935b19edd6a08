/*
 * cli_db.c - the commands that change the queue's database: install,
 * register, unregister and failed list/retry/delete (see cli_int.h).
 * Called through cli.c's command table.
 */
#include "cli_int.h"
#include "schema.h"
#include "config.h"
#include "consumer.h"
#include "daemon.h"
#include "failed.h"
#include "group.h"
#include "group_layout.h"
#include "log.h"
#include "luatest.h"
#include "monitor.h"
#include "service.h"
#include "pgconn.h"
#include "pgq.h"
#include "pgqlua.h"
#include "remote.h"
#include "resize.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Register (or unregister) the consumer, or every partition of a group
 * (all at one tick, as many as its layout has now: a resize may have
 * changed the config's count).  How many changed, or -1 with err. */
static int register_consumer(pgconn *c, config *cfg, int reg, char *err, size_t errlen)
{
	int n, configured = cfg->partitions;
	if (cfg->partitions > 0 && group_layout_apply(c, cfg, err, errlen) != 0)
		return -1;
	if (cfg->partitions > 0 && reg && cfg->partitions != configured) {
		/* a layout none of whose partitions is registered (the queue was
		 * dropped and made again) is forgotten: the config's count holds */
		if ((n = group_registered(c, cfg, err, errlen)) < 0)
			return -1;
		if (n == 0) {
			if (group_layout_forget(c, cfg, err, errlen) != 0)
				return -1;
			cfg->partitions = configured;
		}
	}
	if (cfg->partitions > 0 && reg)
		return group_register(c, cfg, err, errlen);
	if (cfg->partitions > 0) {
		/* the layout goes with the last partition (nothing to forget
		 * when the table was never installed) */
		if ((n = group_unregister(c, cfg, err, errlen)) >= 0 && group_layout_forget(c, cfg, err, errlen) != 0 &&
		    !strstr(err, "42P01"))
			return -1;
		return n;
	}
	return reg ? pgq_register(c, cfg->queue_name, cfg->consumer_name, err, errlen)
	           : pgq_unregister(c, cfg->queue_name, cfg->consumer_name, err, errlen);
}

static void print_registered(const config *cfg, int r)
{
	if (cfg->partitions > 0)
		printf("consumer group %s on queue %s: %d partitions %s.p0of%d .. %s.p%dof%d, %d newly registered\n",
		       cfg->consumer_name, cfg->queue_name, cfg->partitions, cfg->consumer_name, cfg->partitions,
		       cfg->consumer_name, cfg->partitions - 1, cfg->partitions, r);
	else
		printf("consumer %s: %s\n", cfg->consumer_name, r ? "registered" : "already registered");
}

int cmd_install(cli_args *a)
{
	config *cfg;
	pgconn *c = NULL;
	char err[1024];
	int rc, r;

	if (a->npos > 0)
		return cli_usage_error("install: unexpected argument \"%s\"", a->pos[0]);
	if ((rc = service_load_config(a->config, &cfg)) != 0)
		return rc;
	if ((rc = cli_connect_config(cfg, &c)) != 0)
		goto out;
	rc = EXIT_DB;
	if (pgconn_cmd(c, "set client_min_messages = warning; create extension if not exists pgq", err,
	               sizeof(err)) != 0) {
		fprintf(stderr, "pgqlua: the pgq extension is missing and cannot be created: %s\n", err);
		goto out;
	}
	if ((r = pgq_create_queue(c, cfg->queue_name, err, sizeof(err))) < 0) {
		fprintf(stderr, "pgqlua: creating queue %s: %s\n", cfg->queue_name, err);
		goto out;
	}
	printf("queue %s: %s\n", cfg->queue_name, r ? "created" : "exists");
	if ((r = register_consumer(c, cfg, 1, err, sizeof(err))) < 0) {
		fprintf(stderr, "pgqlua: registering %s: %s\n", cfg->consumer_name, err);
		goto out;
	}
	print_registered(cfg, r);
	if (schema_install(c, err, sizeof(err)) != 0) {
		fprintf(stderr, "pgqlua: creating schema pgqlua: %s\n", err);
		goto out;
	}
	if (group_layout_record(c, cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "pgqlua: recording the group's layout: %s\n", err);
		goto out;
	}
	printf("schema pgqlua: ready\n");
	if (schema_install_wakeup(c, err, sizeof(err)) == 0)
		printf("tick wake-up: ready\n");
	else
		printf("tick wake-up: not installed (%s); consumers poll every loop_delay\n", err);
	if (cfg->target_db) {
		pgconn *t = pgconn_new(cfg->target_db, cfg->timezone);
		if (!t || pgconn_connect(t, err, sizeof(err)) != 0) {
			fprintf(stderr, "pgqlua: target: %s\n", t ? err : "out of memory");
			if (!t)
				rc = EXIT_INTERNAL;
			pgconn_free(t);
			goto out;
		}
		if (remote_install_schema(t, err, sizeof(err)) != 0) {
			fprintf(stderr, "pgqlua: creating schema pgqlua in the target: %s\n", err);
			pgconn_free(t);
			goto out;
		}
		printf("target %s: schema pgqlua ready\n", pgconn_safe_name(t));
		pgconn_free(t);
	}
	rc = 0;
out:
	pgconn_free(c);
	config_free(cfg);
	return rc;
}

static int registration(cli_args *a, int reg)
{
	config *cfg;
	pgconn *c = NULL;
	char err[1024];
	int rc, r;

	if (a->npos > 0)
		return cli_usage_error("unexpected argument \"%s\"", a->pos[0]);
	if ((rc = service_load_config(a->config, &cfg)) != 0)
		return rc;
	if ((rc = cli_connect_config(cfg, &c)) != 0)
		goto out;
	r = register_consumer(c, cfg, reg, err, sizeof(err));
	if (r < 0) {
		fprintf(stderr, "pgqlua: %s %s on %s: %s\n", reg ? "registering" : "unregistering",
		        cfg->consumer_name, cfg->queue_name, err);
		rc = EXIT_DB;
		goto out;
	}
	if (reg && cfg->partitions > 0)
		print_registered(cfg, r);
	else if (reg)
		printf("consumer %s on queue %s: %s\n", cfg->consumer_name, cfg->queue_name,
		       r ? "registered" : "already registered");
	else
		printf("consumer %s on queue %s: unregistered\n", cfg->consumer_name, cfg->queue_name);
out:
	pgconn_free(c);
	config_free(cfg);
	return rc;
}

int cmd_register(cli_args *a)
{
	return registration(a, 1);
}

int cmd_unregister(cli_args *a)
{
	return registration(a, 0);
}

int cmd_failed(cli_args *a)
{
	typedef long (*failed_fn)(pgconn *, const char *, const char *, const long long *, int, FILE *,
	                          char *, size_t);
	config *cfg;
	pgconn *c = NULL;
	char err[1024];
	long long ids[MAX_ARGS];
	int nids = 0, all = 0, rc, dup;
	long n;
	failed_fn fn;
	const char *action = a->command;

	if (strcmp(action, "list") == 0)
		fn = failed_list;
	else if (strcmp(action, "retry") == 0)
		fn = failed_retry;
	else if (strcmp(action, "delete") == 0)
		fn = failed_delete;
	else
		return cli_usage_error("failed: unknown action \"%s\" (use list, retry or delete)", action);
	for (int i = 0; i < a->npos; i++) {
		char *end;
		if (strcmp(a->pos[i], "all") == 0) {
			all = 1;
			continue;
		}
		errno = 0;
		ids[nids] = strtoll(a->pos[i], &end, 10);
		if (errno || end == a->pos[i] || *end || ids[nids] <= 0)
			return cli_usage_error("failed: \"%s\" is not an event id (a positive integer or \"all\")",
			                   a->pos[i]);
		dup = 0;
		for (int j = 0; j < nids && !dup; j++)
			dup = ids[j] == ids[nids];
		if (!dup)
			nids++;
	}
	if (fn != failed_list && nids == 0 && !all)
		return cli_usage_error("failed %s: give event ids or \"all\"", action);
	if (all && nids > 0)
		return cli_usage_error("failed: give event ids or \"all\", not both%s", "");
	if ((rc = service_load_config(a->config, &cfg)) != 0)
		return rc;
	if ((rc = cli_connect_config(cfg, &c)) != 0)
		goto out;
	n = fn(c, cfg->queue_name, cfg->consumer_name, ids, nids, stdout, err, sizeof(err));
	if (n < 0) {
		fprintf(stderr, "pgqlua: failed %s: %s%s\n", action, err,
		            strstr(err, "pgqlua.failed_event") ? FAILED_INSTALL_HINT : "");
		rc = EXIT_DB;
	} else if (nids > 0 && n < nids)
		rc = EXIT_PARTIAL;
out:
	pgconn_free(c);
	config_free(cfg);
	return rc;
}

/* resize CONFIG M [--timeout SECS] */
int cmd_resize(cli_args *a)
{
	config *cfg;
	pgconn *c = NULL;
	double timeout = 60;
	long to = 0;
	int rc, have_to = 0;

	for (int i = 0; i < a->npos; i++) {
		const char *arg = a->pos[i];
		char *end;
		if (strcmp(arg, "--timeout") == 0 || strncmp(arg, "--timeout=", 10) == 0) {
			const char *v = arg[9] == '=' ? arg + 10 : i + 1 < a->npos ? a->pos[++i] : "";
			timeout = strtod(v, &end);
			if (end == v || *end || timeout <= 0)
				return cli_usage_error("resize: --timeout \"%s\" is not a positive number of seconds", v);
		} else if (arg[0] == '-')
			return cli_usage_error("resize: unknown option \"%s\"", arg);
		else if (!have_to) {
			errno = 0;
			to = strtol(arg, &end, 10);
			if (errno || end == arg || *end || to < 1 || to > CONFIG_PARTITIONS_MAX) {
				fprintf(stderr, "pgqlua: resize: \"%s\" is not a number of partitions (1 to %d) (see pgqlua --help)\n",
				        arg, CONFIG_PARTITIONS_MAX);
				return EXIT_USAGE;
			}
			have_to = 1;
		} else
			return cli_usage_error("resize: unexpected argument \"%s\"", arg);
	}
	if (!a->config || !have_to)
		return cli_usage_error("resize: give CONFIG and the new number of partitions%s", "");
	if ((rc = service_load_config(a->config, &cfg)) != 0)
		return rc;
	if (cfg->partitions <= 0) {
		fprintf(stderr, "pgqlua: resize: %s: consumer %s is not a group (no partitions: key)\n", cfg->path,
		        cfg->consumer_name);
		rc = EXIT_CONFIG;
	} else if ((rc = cli_connect_config(cfg, &c)) == 0)
		rc = resize_group(c, cfg, (int)to, timeout, stdout);
	pgconn_free(c);
	config_free(cfg);
	return rc;
}

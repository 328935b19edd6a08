/*
 * cli.c - the command table of the pgqlua program (see cli.h).  Each
 * command parses its own options, which may stand before or after CONFIG,
 * and returns an exit code; only main.c exits.
 */
#include "schema.h"
#include "cli_int.h"
#include "config.h"
#include "consumer.h"
#include "daemon.h"
#include "failed.h"
#include "group.h"
#include "group_layout.h"
#include "log.h"
#include "luatest.h"
#include "monitor.h"
#include "peek.h"
#include "seek.h"
#include "service.h"
#include "pgconn.h"
#include "pgq.h"
#include "pgqlua.h"
#include "remote.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


typedef struct cli_command {
	const char *name;
	int (*run)(cli_args *a);
	const char *usage;
	const char *help;
	int needs_config;
	const char *options;         /* accepted long options, space separated */
} cli_command;

static int cmd_run(cli_args *a);
static int cmd_start(cli_args *a);
static int cmd_control(cli_args *a);
static int cmd_restart(cli_args *a);
static int cmd_status(cli_args *a);
static int cmd_check(cli_args *a);
static int cmd_munin(cli_args *a);
static int cmd_seek(cli_args *a);
static int cmd_peek(cli_args *a);
static int cmd_sample_config(cli_args *a);
static int cmd_test(cli_args *a);

static const cli_command commands[] = {
	{"run", cmd_run, "run [--once] CONFIG", "consume in the foreground until SIGTERM/SIGINT;"
	 " --once: until no batch is ready", 1, "--once"},
	{"start", cmd_start, "start CONFIG", "start as a daemon (pid file locked; refuses if already running)", 1, ""},
	{"stop", cmd_control, "stop CONFIG", "stop after the current batch commits; waits up to shutdown_timeout", 1, ""},
	{"kill", cmd_control, "kill CONFIG", "stop at once: the open batch is rolled back and comes again", 1, ""},
	{"restart", cmd_restart, "restart CONFIG", "stop, then start", 1, ""},
	{"reload", cmd_control, "reload CONFIG", "re-read config and script between batches (SIGHUP); reopen the log", 1, ""},
	{"logmore", cmd_control, "logmore CONFIG", "log one level more verbosely (SIGUSR1)", 1, ""},
	{"logless", cmd_control, "logless CONFIG", "log one level less verbosely (SIGUSR2)", 1, ""},
	{"status", cmd_status, "status [--json] CONFIG", "process and PgQ state; exit 0 running, 3 not running", 1, "--json"},
	{"check", cmd_check, "check CONFIG [OPTIONS]",
	 "Nagios/Icinga plugin (-w/-c SECS, --failed-warn/--failed-crit N, -t SECS); exit 0..3", 1, "*"},
	{"munin", cmd_munin, "munin CONFIG [config|autoconf]", "munin plugin: lag, last seen, pending, failed", 1, "*"},
	{"install", cmd_install, "install CONFIG", "create the queue if missing, register the consumer,"
	 " create schema pgqlua", 1, ""},
	{"register", cmd_register, "register CONFIG", "register the consumer on its queue", 1, ""},
	{"unregister", cmd_unregister, "unregister CONFIG", "unregister the consumer (its pending events are dropped by PgQ)", 1, ""},
	{"failed", cmd_failed, "failed list|retry|delete CONFIG [ID...|all]",
	 "show failed events, put them back into the queue for this consumer, or delete them", 1, ""},
	{"resize", cmd_resize, "resize CONFIG M [--timeout SECS]",
	 "move a consumer group to M partitions while it runs (nothing lost or doubled)", 1, "*"},
	{"seek", cmd_seek, "seek CONFIG --tick N|--time TIMESTAMP|--latest [--yes]",
	 "move a stopped consumer back to replay events or forward to skip them (--yes to skip)", 1, "*"},
	{"peek", cmd_peek, "peek CONFIG [--limit N] [--json]",
	 "show the next events the consumer would get, changing nothing", 1, "*"},
	{"sample-config", cmd_sample_config, "sample-config", "print every config key with its default", 0, ""},
	{"test", cmd_test, "test SCRIPT EVENTS|--event JSON", "run a script on events from a YAML/JSON file (- for stdin)"
	 " without a database, with the mock batch runner", 0, "*"},
};

#define N_COMMANDS ((int)(sizeof(commands) / sizeof(commands[0])))

static void print_usage(FILE *out)
{
	fprintf(out, "Usage: pgqlua COMMAND CONFIG [args]\n\nCommands:\n");
	for (int i = 0; i < N_COMMANDS; i++)
		fprintf(out, "  pgqlua %-44s %s\n", commands[i].usage, commands[i].help);
	fprintf(out, "\n  pgqlua --help | --version\n\n"
	             "Exit codes: 0 ok, 1 some event ids not found, 2 already running, 3 not running,\n"
	             "64 usage, 65 script error,"
	             " 66 config file unreadable, 69 database unavailable,\n70 internal error,"
	             " 73 pid file, 75 batch rolled back or stop timed out, 78 config invalid.\n"
	             "check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.\n");
}

int cli_usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "pgqlua: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see pgqlua --help)\n");
	return EXIT_USAGE;
}


int cli_connect_config(const config *cfg, pgconn **out)
{
	char err[1024];
	pgconn *c;
	*out = NULL;
	if (pgconn_check_conninfo(cfg->db, err, sizeof(err)) != 0) {
		fprintf(stderr, "pgqlua: %s: %s\n", cfg->path, err);
		return EXIT_CONFIG;
	}
	c = pgconn_new(cfg->db, cfg->timezone);
	if (!c) {
		fprintf(stderr, "pgqlua: out of memory\n");
		return EXIT_INTERNAL;
	}
	if (pgconn_connect(c, err, sizeof(err)) != 0) {
		fprintf(stderr, "pgqlua: %s\n", err);
		pgconn_free(c);
		return EXIT_DB;
	}
	*out = c;
	return 0;
}

/* Connected, with a group's partition count as its layout has it now (a
 * resize may have changed the config's). */
static int connect_layout(config *cfg, pgconn **out)
{
	char err[PGCONN_ERR_LEN];
	int rc = cli_connect_config(cfg, out);
	if (rc == 0 && cfg->partitions > 0 && group_layout_apply(*out, cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "pgqlua: reading the layout of group %s: %s\n", cfg->consumer_name, err);
		rc = EXIT_DB;
	}
	return rc;
}

static int cmd_run(cli_args *a)
{
	if (a->npos > 0)
		return cli_usage_error("run: unexpected argument \"%s\"", a->pos[0]);
	return service_run(a->config, a->once, 0);
}

static int cmd_start(cli_args *a)
{
	if (a->npos > 0)
		return cli_usage_error("start: unexpected argument \"%s\"", a->pos[0]);
	return service_run(a->config, 0, 1);
}

static int cmd_control(cli_args *a)
{
	if (a->npos > 0)
		return cli_usage_error("unexpected argument \"%s\"", a->pos[0]);
	return service_signal(a->config, a->command);
}

static int cmd_restart(cli_args *a)
{
	int rc;
	if (a->npos > 0)
		return cli_usage_error("restart: unexpected argument \"%s\"", a->pos[0]);
	rc = service_signal(a->config, "stop");
	return rc != EXIT_OK_ ? rc : service_run(a->config, 0, 1);
}

static int cmd_status(cli_args *a)
{
	if (a->npos > 0)
		return cli_usage_error("status: unexpected argument \"%s\"", a->pos[0]);
	return service_status(a->config, a->json);
}

static int cmd_check(cli_args *a)
{
	config *cfg;
	char err[1024];
	int rc;
	if (!a->config) {
		printf("PGQLUA UNKNOWN - usage: pgqlua check CONFIG [-w SECS] [-c SECS] [--failed-warn N] [--failed-crit N] [-t SECS]\n");
		return 3;
	}
	if (config_load(a->config, &cfg, err, sizeof(err)) != CONFIG_OK) {
		printf("PGQLUA UNKNOWN - %s\n", err);
		return 3;
	}
	rc = monitor_check(cfg, a->npos, a->pos);
	config_free(cfg);
	return rc;
}

static int cmd_munin(cli_args *a)
{
	config *cfg;
	int rc;
	if (getenv("PGQLUA_CONFIG") && (!a->config || !strcmp(a->config, "config") || !strcmp(a->config, "autoconf"))) {
		/* munin runs plugins without arguments: CONFIG from plugin-conf.d */
		if (a->config && a->npos < MAX_ARGS) {
			memmove(a->pos + 1, a->pos, sizeof(a->pos[0]) * (size_t)a->npos);
			a->pos[0] = a->config;
			a->npos++;
		}
		a->config = getenv("PGQLUA_CONFIG");
	}
	if (!a->config)
		return cli_usage_error("munin: no CONFIG file given (or set env.PGQLUA_CONFIG)%s", "");
	if (a->npos > 1)
		return cli_usage_error("munin: unexpected argument \"%s\"", a->pos[1]);
	if ((rc = service_load_config(a->config, &cfg)) != 0)
		return rc;
	rc = monitor_munin(cfg, a->npos ? a->pos[0] : NULL);
	config_free(cfg);
	return rc;
}

/* Options of seek and peek: CONFIG anywhere, --name VALUE or --name=VALUE
 * for the names in `valued`, flags in `flags`.  Fills vals/set in the order
 * of the names; returns 0 or a usage error's exit code. */
static int parse_own_options(cli_args *a, const char *const *names, int nnames, const char **vals, int *set)
{
	int npos = a->npos;
	a->npos = 0;
	for (int i = 0; i < npos; i++) {
		const char *arg = a->pos[i];
		int k;
		if (arg[0] != '-' || arg[1] == '\0') {
			if (a->config)
				return cli_usage_error("%s: unexpected argument", arg);
			a->config = arg;
			continue;
		}
		for (k = 0; k < nnames; k++) {
			const char *name = names[k] + 1;    /* names: "=--tick" takes a value, "---yes" not */
			size_t n = strlen(name);
			if (strncmp(arg, name, n) != 0 || (arg[n] != '\0' && arg[n] != '='))
				continue;
			if (names[k][0] == '-') {
				if (arg[n] == '=')
					return cli_usage_error("%s takes no value", name);
				vals[k] = "";
			} else if (arg[n] == '=')
				vals[k] = arg + n + 1;
			else if (i + 1 < npos)
				vals[k] = a->pos[++i];
			else
				return cli_usage_error("%s needs a value", name);
			set[k] = 1;
			break;
		}
		if (k == nnames)
			return cli_usage_error("unknown option \"%s\"", arg);
	}
	if (!a->config)
		return cli_usage_error("%s: no CONFIG file given", a->command);
	return 0;
}

static int positive_int(const char *s, long long max, long long *v)
{
	char *end;
	errno = 0;
	*v = strtoll(s, &end, 10);
	return !errno && end != s && !*end && *v > 0 && *v <= max;
}

static int cmd_seek(cli_args *a)
{
	static const char *const names[] = {"=--tick", "=--time", "---latest", "---yes"};
	const char *vals[4] = {NULL, NULL, NULL, NULL};
	int set[4] = {0, 0, 0, 0}, rc;
	long long tick;
	seek_to to;
	config *cfg;
	pgconn *c = NULL;

	if ((rc = parse_own_options(a, names, 4, vals, set)) != 0)
		return rc;
	if (set[0] + set[1] + set[2] != 1)
		return cli_usage_error("seek: give one of --tick N, --time TIMESTAMP or --latest%s", "");
	if (set[0] && !positive_int(vals[0], 9223372036854775807LL, &tick))
		return cli_usage_error("seek: --tick \"%s\" is not a tick id (a positive integer)", vals[0]);
	if (set[1] && !vals[1][0])
		return cli_usage_error("seek: --time needs a timestamp%s", "");
	to = set[0] ? SEEK_TICK : set[1] ? SEEK_TIME : SEEK_LATEST;
	if ((rc = service_load_config(a->config, &cfg)) != 0)
		return rc;
	{
		char pidfile[4096];
		pid_t pid;
		service_pidfile(cfg, pidfile, sizeof(pidfile));
		if (daemon_pidfile_running(pidfile, &pid)) {
			fprintf(stderr, "pgqlua: seek: consumer %s is running (pid %d, %s): stop it first\n",
			        cfg->consumer_name, (int)pid, pidfile);
			rc = EXIT_RUNNING;
			goto out;
		}
	}
	if ((rc = connect_layout(cfg, &c)) != 0)
		goto out;
	rc = seek_consumer(c, cfg, to, set[0] ? vals[0] : vals[1], set[3], stdout);
out:
	pgconn_free(c);
	config_free(cfg);
	return rc;
}

static int cmd_peek(cli_args *a)
{
	static const char *const names[] = {"=--limit", "---json"};
	const char *vals[2] = {NULL, NULL};
	int set[2] = {0, 0}, rc;
	long long limit = 10;
	config *cfg;
	pgconn *c = NULL;

	if ((rc = parse_own_options(a, names, 2, vals, set)) != 0)
		return rc;
	if (set[0] && !positive_int(vals[0], 1000000, &limit))
		return cli_usage_error("peek: --limit \"%s\" is not a number from 1 to 1000000", vals[0]);
	if ((rc = service_load_config(a->config, &cfg)) != 0)
		return rc;
	if ((rc = connect_layout(cfg, &c)) == 0)
		rc = peek_show(c, cfg, (int)limit, set[1], stdout);
	pgconn_free(c);
	config_free(cfg);
	return rc;
}

static int cmd_sample_config(cli_args *a)
{
	(void)a;
	config_print_sample(stdout);
	return 0;
}

static int cmd_test(cli_args *a)
{
	return luatest_main(a->npos, (char **)a->pos);
}

static const cli_command *find_command(const char *name)
{
	for (int i = 0; i < N_COMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static int option_allowed(const cli_command *cmd, const char *opt)
{
	size_t n = strlen(opt);
	for (const char *p = cmd->options; (p = strstr(p, opt)) != NULL; p += n)
		if (p[n] == ' ' || p[n] == '\0')
			return 1;
	return 0;
}

int cli_main(int argc, char **argv)
{
	const cli_command *cmd;
	cli_args a;
	int first = 2, config_seen = 0;

	memset(&a, 0, sizeof(a));
	if (argc < 2)
		return cli_usage_error("no command given%s", "");
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
		print_usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
		printf("pgqlua %s\n", pgqlua_version());
		return 0;
	}
	cmd = find_command(argv[1]);
	if (!cmd)
		return cli_usage_error("unknown command \"%s\"", argv[1]);
	a.command = cmd->name;
	if (cmd->run == cmd_failed) {
		if (argc < 3 || argv[2][0] == '-')
			return cli_usage_error("failed: give an action: list, retry or delete%s", "");
		a.command = argv[2];
		first = 3;
	}
	if (cmd->run == cmd_seek || cmd->run == cmd_peek || cmd->run == cmd_resize)
		for (int i = first; i < argc; i++)
			if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
				printf("Usage: pgqlua %s\n  %s\n", cmd->usage, cmd->help);
				return 0;
			}
	if (strcmp(cmd->options, "*") == 0) {
		/* the command parses its own arguments (after CONFIG, if it takes one) */
		if (cmd->needs_config && first < argc && argv[first][0] != '-')
			a.config = argv[first++];
		for (int i = first; i < argc && a.npos < MAX_ARGS; i++)
			a.pos[a.npos++] = argv[i];
		return cmd->run(&a);
	}
	for (int i = first; i < argc; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			printf("Usage: pgqlua %s\n  %s\n", cmd->usage, cmd->help);
			return 0;
		}
		if (arg[0] == '-' && arg[1] != '\0') {
			if (!option_allowed(cmd, arg))
				return cli_usage_error("unknown option \"%s\"", arg);
			if (strcmp(arg, "--once") == 0)
				a.once = 1;
			if (strcmp(arg, "--json") == 0)
				a.json = 1;
			continue;
		}
		if (cmd->needs_config && !config_seen) {
			a.config = arg;
			config_seen = 1;
		} else if (a.npos < MAX_ARGS)
			a.pos[a.npos++] = arg;
		else
			return cli_usage_error("too many arguments%s", "");
	}
	if (cmd->needs_config && !a.config)
		return cli_usage_error("%s: no CONFIG file given", cmd->name);
	return cmd->run(&a);
}

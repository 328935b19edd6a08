/*
 * config.c - parse a consumer's YAML config (see config.h).  One key table
 * drives parsing, defaults, --sample-config and the documentation check;
 * the values' syntax is in config_value.c.
 */
#include "config_int.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

/* a config is a few hundred bytes; more is not a config */
#define CONFIG_MAX_BYTES (1024 * 1024)

static const cfg_key cfg_keys[] = {
	{"queue_name", CFG_STR, OFF(queue_name), NULL, 1, 1, "PgQ queue to consume"},
	{"consumer_name", CFG_STR, OFF(consumer_name), NULL, 1, 1, "consumer name registered on the queue"},
	{"db", CFG_STR, OFF(db), NULL, 1, 1, "libpq conninfo or URI of the queue's database"},
	{"target_db", CFG_STR, OFF(target_db), NULL, 0, 1, "remote consumer: libpq conninfo or URI of the database the script's db writes to"},
	{"timezone", CFG_STR, OFF(timezone), "UTC", 0, 1, "TimeZone of every connection the runtime opens: ev.time and the batch's tick times are shown in it"},
	{"remote_mode", CFG_REMOTE_MODE, OFF(remote_event_mode), "batch", 0, 0, "remote consumer: batch (one target transaction per batch) or event (one per event)"},
	{"event_filter", CFG_STR, OFF(event_filter), NULL, 0, 1, "SQL boolean expression over ev_id, ev_type, ev_data, ev_extra1..4: only matching events are read, on the server (unset: all)"},
	{"partitions", CFG_INT, OFF(partitions), "0", 0, 1, "a consumer group: this many partitions, each a PgQ consumer NAME.pIofN shared among the members (0: one ungrouped consumer); the count install starts with (pgqlua resize changes it in the database)"},
	{"partition_key", CFG_STR, OFF(partition_key), NULL, 0, 1, "SQL expression over the event's columns: events with equal keys go to one partition, in order (unset: table and primary key of pgq's trigger events, else ev_id)"},
	{"workers", CFG_INT, OFF(workers), "1", 0, 1, "`run` and `start` run this many worker processes under the one supervising parent: members of the group (partitions), or hot standbys of one consumer"},
	{"tcp_keepalive", CFG_SECONDS, OFF(tcp_keepalive), "10", 0, 0, "seconds of silence before the server probes a consumer's TCP connection (3 probes, a third of it apart): a lost machine's claims are freed within about twice this (0: the server's settings)"},
	{"script", CFG_PATH, OFF(script), NULL, 1, 0, "Lua script defining process_event(ev, db), relative to this file"},
	{"loop_delay", CFG_SECONDS, OFF(loop_delay), "1", 0, 0, "seconds to wait when no batch is ready"},
	{"wakeup", CFG_BOOL, OFF(wakeup), "true", 0, 0, "wake up when the queue ticks (LISTEN, trigger from `pgqlua install`) instead of only after loop_delay"},
	{"retry_delay", CFG_SECONDS, OFF(retry_delay), "60", 0, 0, "default seconds before a retried event comes back"},
	{"max_retries", CFG_INT, OFF(max_retries), "5", 0, 0, "retries before an event goes to the failed-event table"},
	{"fetch_size", CFG_INT, OFF(fetch_size), "300", 0, 0, "events fetched from the batch cursor at a time"},
	{"batch_min_count", CFG_INT, OFF(batch_min_count), "0", 0, 0, "pgq.next_batch_custom: wait for this many events (0: off)"},
	{"batch_min_interval", CFG_SECONDS, OFF(batch_min_interval), "-1", 0, 0, "pgq.next_batch_custom: or this many seconds (unset: off)"},
	{"batch_min_lag", CFG_SECONDS, OFF(batch_min_lag), "-1", 0, 0, "pgq.next_batch_custom: only events older than this (unset: off)"},
	{"prepared_statements", CFG_BOOL, OFF(prepared_statements), "true", 0, 0, "keep the script's statements prepared on the server (off behind a transaction-pooling PgBouncer before 1.21)"},
	{"stats_period", CFG_SECONDS, OFF(stats_period), "30", 0, 0, "seconds between stats lines in the log (0: off)"},
	{"event_timeout", CFG_SECONDS, OFF(event_timeout), "0", 0, 0, "seconds of Lua time one event may take (0: no limit)"},
	{"lua_memory_limit", CFG_BYTES, OFF(lua_memory_limit), "0", 0, 0, "bytes the Lua state may allocate, the script's load and init included (0: no limit)"},
	{"kill_grace", CFG_SECONDS, OFF(kill_grace), "2", 0, 0, "seconds the supervising parent allows past event_timeout (or the load limit), and after `pgqlua kill` or a second stop, before it kills the worker"},
	{"max_crashes", CFG_INT, OFF(max_crashes), "3", 0, 0, "times one event may kill the worker (deadline, crash, out of memory) before it goes to the failed-event table"},
	{"lua_path", CFG_LUA_PATH, OFF(lua_path), NULL, 0, 0, "more places for require, like package.path (\"lib/?.lua;lib/?/init.lua\"), relative to this file"},
	{"env_allow", CFG_NAMES, OFF(env_allow), NULL, 0, 0, "environment variables the script may read with os.getenv (a list; others read as nil)"},
	{"lua_modules", CFG_NAMES, OFF(lua_modules), NULL, 0, 0, "C modules from the system's Lua 5.4 folders the script may require, as a list ([cjson, lpeg]; a name lets its submodules too); others are refused"},
	{"http_timeout", CFG_SECONDS, OFF(http_timeout), "30", 0, 0, "seconds one pgq.http request may take when the request gives no timeout"},
	{"http_concurrency", CFG_INT, OFF(http_concurrency), "16", 0, 0, "pgq.http.send requests in flight at most"},
	{"http_max_body", CFG_BYTES, OFF(http_max_body), "10MB", 0, 0, "largest response body pgq.http reads; a longer one is an error"},
	{"http_ca_file", CFG_PATH, OFF(http_ca_file), NULL, 0, 0, "PEM file of CA certificates pgq.http trusts besides the system's, relative to this file"},
	{"http_idempotency_key", CFG_BOOL, OFF(http_idempotency_key), "true", 0, 0, "add Idempotency-Key: queue/consumer/event id to every pgq.http request made for an event"},
	{"smtp_url", CFG_STR, OFF(smtp_url), NULL, 0, 0, "SMTP server of pgq.mail.send: smtp://host:port or smtps://host:port (a user and password in it are used, never shown)"},
	{"smtp_user", CFG_STR, OFF(smtp_user), NULL, 0, 0, "user name pgq.mail.send logs in with (unset: the one in smtp_url, or none)"},
	{"smtp_password", CFG_STR, OFF(smtp_password), NULL, 0, 0, "password pgq.mail.send logs in with, e.g. \"${SMTP_PASSWORD}\" (never shown)"},
	{"pidfile", CFG_PATH, OFF(pidfile), NULL, 0, 1, "pid file, relative to this file"},
	{"logfile", CFG_PATH, OFF(logfile), NULL, 0, 0, "log file, relative to this file (unset: stderr)"},
	{"log_level", CFG_LEVEL, OFF(log_level), "info", 0, 0, "error, warn, info, debug or trace"},
	{"log_syslog", CFG_BOOL, OFF(log_syslog), "false", 0, 0, "log to syslog (facility daemon) instead of stderr or logfile"},
	{"metrics_listen", CFG_STR, OFF(metrics_listen), NULL, 0, 1, "serve Prometheus metrics on HOST:PORT (GET /metrics, e.g. \"127.0.0.1:9187\"; unset: off)"},
	{"metrics_file", CFG_PATH, OFF(metrics_file), NULL, 0, 0, "write the Prometheus metrics to this file every stats_period, atomically, for node_exporter's textfile collector (unset: off)"},
	{"shutdown_timeout", CFG_SECONDS, OFF(shutdown_timeout), "60", 0, 0, "seconds `pgqlua stop` waits for the current batch to finish"},
};

#define N_KEYS ((int)(sizeof(cfg_keys) / sizeof(cfg_keys[0])))

const char *config_key_name(int i)
{
	return (i >= 0 && i < N_KEYS) ? cfg_keys[i].name : NULL;
}

static const cfg_key *find_key(const char *name)
{
	for (int i = 0; i < N_KEYS; i++)
		if (strcmp(cfg_keys[i].name, name) == 0)
			return &cfg_keys[i];
	return NULL;
}

static config *config_new(const char *name)
{
	config *cfg = calloc(1, sizeof(*cfg));
	const char *slash;
	char err[64];
	if (!cfg)
		return NULL;
	cfg->path = strdup(name);
	slash = strrchr(name, '/');
	cfg->dir = slash ? strndup(name, (size_t)(slash - name) + (slash == name)) : strdup(".");
	if (!cfg->path || !cfg->dir) {
		config_free(cfg);
		return NULL;
	}
	for (int i = 0; i < N_KEYS; i++)
		if (cfg_keys[i].def && config_set_value(cfg, &cfg_keys[i], cfg_keys[i].def, err, sizeof(err)) != 0) {
			config_free(cfg);
			return NULL;
		}
	return cfg;
}

/* Where the parse stands: the key whose value comes next, the nesting. */
typedef struct parse_state {
	const char *name;          /* the file, for messages */
	int seen[N_KEYS];          /* 1: set; 2: present but null (as if absent) */
	const cfg_key *key;
	int depth, have_root, in_list;
} parse_state;

/* A key's name. */
static config_status take_key(parse_state *ps, const char *v, size_t line, size_t col, char *err,
                              size_t errlen)
{
	const cfg_key *key = find_key(v);
	if (!key) {
		snprintf(err, errlen, "%s:%zu:%zu: unknown key \"%s\"", ps->name, line, col, v);
		return CONFIG_ERR_INVALID;
	}
	if (ps->seen[key - cfg_keys]) {
		snprintf(err, errlen, "%s:%zu:%zu: duplicate key \"%s\"", ps->name, line, col, v);
		return CONFIG_ERR_INVALID;
	}
	ps->seen[key - cfg_keys] = 1;
	ps->key = key;
	return CONFIG_OK;
}

/* A key's value (or one item of a list): ${VAR} expanded, parsed,
 * checked.  An error quotes what the file says, never the expansion. */
static config_status take_value(parse_state *ps, config *cfg, const yaml_event_t *ev, size_t line,
                                size_t col, char *err, size_t errlen)
{
	const cfg_key *key = ps->key;
	const char *v = (const char *)ev->data.scalar.value;
	char verr[256], *x;

	if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
	    (v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0)) {
		if (!ps->in_list)
			ps->seen[key - cfg_keys] = 2;
		return CONFIG_OK;
	}
	x = config_expand_env(v, verr, sizeof(verr));
	if (!x || config_set_value(cfg, key, x, verr, sizeof(verr)) != 0) {
		int oom = strcmp(verr, "out of memory") == 0;
		if (x && !oom && strstr(v, "${"))
			/* the expanded value may be a secret in the wrong key:
			 * name the key and what was written */
			snprintf(verr, sizeof(verr), "%s must be %s; \"%.*s\" expands to something else (value not shown)",
			         key->name, config_type_name(key->type), 160, v);
		free(x);
		snprintf(err, errlen, "%s:%zu:%zu: %s", ps->name, line, col, verr);
		return oom ? CONFIG_ERR_NOMEM : CONFIG_ERR_INVALID;
	}
	free(x);
	if (key->required && config_value_empty(cfg, key)) {
		snprintf(err, errlen, "%s:%zu:%zu: %s must not be empty", ps->name, line, col, key->name);
		return CONFIG_ERR_INVALID;
	}
	if (key->offset == OFF(fetch_size) && cfg->fetch_size < 1) {
		snprintf(err, errlen, "%s:%zu:%zu: fetch_size must be at least 1", ps->name, line, col);
		return CONFIG_ERR_INVALID;
	}
	if (key->offset == OFF(smtp_url) && strncasecmp(cfg->smtp_url, "smtp://", 7) != 0 &&
	    strncasecmp(cfg->smtp_url, "smtps://", 8) != 0) {
		/* the value is not quoted: it may hold a password */
		snprintf(err, errlen, "%s:%zu:%zu: smtp_url must start with smtp:// or smtps://", ps->name, line, col);
		return CONFIG_ERR_INVALID;
	}
	if (key->offset == OFF(workers) && (cfg->workers < 1 || cfg->workers > CONFIG_WORKERS_MAX)) {
		snprintf(err, errlen, "%s:%zu:%zu: workers must be 1 to %d", ps->name, line, col, CONFIG_WORKERS_MAX);
		return CONFIG_ERR_INVALID;
	}
	if (key->offset == OFF(partitions) && cfg->partitions > CONFIG_PARTITIONS_MAX) {
		snprintf(err, errlen, "%s:%zu:%zu: partitions must be at most %d", ps->name, line, col,
		         CONFIG_PARTITIONS_MAX);
		return CONFIG_ERR_INVALID;
	}
	return CONFIG_OK;
}

/* One YAML event.  *done at the end of the stream. */
static config_status take_event(parse_state *ps, config *cfg, const yaml_event_t *ev, int *done,
                                char *err, size_t errlen)
{
	size_t line = ev->start_mark.line + 1, col = ev->start_mark.column + 1;
	const cfg_key *key = ps->key;
	config_status st;

	switch (ev->type) {
	case YAML_STREAM_END_EVENT:
		*done = 1;
		return CONFIG_OK;
	case YAML_MAPPING_START_EVENT:
		if (ps->depth > 0 || ps->have_root || ps->in_list) {
			snprintf(err, errlen, "%s:%zu:%zu: %s must be %s, not a mapping", ps->name, line, col,
			         key ? key->name : "value", key ? config_type_name(key->type) : "a scalar");
			return CONFIG_ERR_INVALID;
		}
		ps->depth++;
		ps->have_root = 1;
		return CONFIG_OK;
	case YAML_MAPPING_END_EVENT:
		ps->depth--;
		return CONFIG_OK;
	case YAML_SEQUENCE_START_EVENT:
		if (key && key->type == CFG_NAMES && !ps->in_list) {
			ps->in_list = 1;   /* its items are added one by one */
			return CONFIG_OK;
		}
		snprintf(err, errlen, "%s:%zu:%zu: %s must be %s, not a list", ps->name, line, col,
		         key ? key->name : "the config", key ? config_type_name(key->type) : "a mapping of keys");
		return CONFIG_ERR_INVALID;
	case YAML_SEQUENCE_END_EVENT:
		ps->in_list = 0;
		ps->key = NULL;
		return CONFIG_OK;
	case YAML_ALIAS_EVENT:
		snprintf(err, errlen, "%s:%zu:%zu: YAML aliases are not supported", ps->name, line, col);
		return CONFIG_ERR_INVALID;
	case YAML_SCALAR_EVENT:
		if (ps->depth == 0) {
			snprintf(err, errlen, "%s:%zu:%zu: the config must be a mapping of keys", ps->name, line, col);
			return CONFIG_ERR_INVALID;
		}
		if (!key)
			return take_key(ps, (const char *)ev->data.scalar.value, line, col, err, errlen);
		if ((st = take_value(ps, cfg, ev, line, col, err, errlen)) == CONFIG_OK && !ps->in_list)
			ps->key = NULL;
		return st;
	default:
		return CONFIG_OK;
	}
}

static config_status parse_events(yaml_parser_t *p, config *cfg, const char *name,
                                  char *err, size_t errlen)
{
	parse_state ps;
	yaml_event_t ev;
	int done = 0;

	memset(&ps, 0, sizeof(ps));
	ps.name = name;
	while (!done) {
		config_status st;
		if (!yaml_parser_parse(p, &ev)) {
			if (p->error == YAML_MEMORY_ERROR) {
				snprintf(err, errlen, "out of memory");
				return CONFIG_ERR_NOMEM;
			}
			snprintf(err, errlen, "%s:%zu:%zu: YAML syntax error: %s", name,
			         p->problem_mark.line + 1, p->problem_mark.column + 1,
			         p->problem ? p->problem : "unknown");
			return CONFIG_ERR_INVALID;
		}
		st = take_event(&ps, cfg, &ev, &done, err, errlen);
		yaml_event_delete(&ev);
		if (st != CONFIG_OK)
			return st;
	}
	if (!ps.have_root) {
		snprintf(err, errlen, "%s:1:1: the config is empty", name);
		return CONFIG_ERR_INVALID;
	}
	for (int i = 0; i < N_KEYS; i++)
		if (cfg_keys[i].required && ps.seen[i] != 1) {
			snprintf(err, errlen, "%s:1:1: missing required key \"%s\"", name, cfg_keys[i].name);
			return CONFIG_ERR_INVALID;
		}
	return CONFIG_OK;
}

config_status config_parse_string(const char *text, const char *name, config **out,
                                  char *err, size_t errlen)
{
	yaml_parser_t parser;
	config *cfg;
	config_status st;

	*out = NULL;
	cfg = config_new(name);
	if (!cfg) {
		snprintf(err, errlen, "out of memory");
		return CONFIG_ERR_NOMEM;
	}
	if (!yaml_parser_initialize(&parser)) {
		config_free(cfg);
		snprintf(err, errlen, "out of memory");
		return CONFIG_ERR_NOMEM;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
	st = parse_events(&parser, cfg, name, err, errlen);
	yaml_parser_delete(&parser);
	if (st != CONFIG_OK) {
		/* one line (config.h): a quoted key, value or ${name} may hold line breaks */
		for (char *c = err; errlen > 0 && *c; c++)
			if (*c == '\n' || *c == '\r')
				*c = ' ';
		config_free(cfg);
		return st;
	}
	*out = cfg;
	return CONFIG_OK;
}

config_status config_load(const char *path, config **out, char *err, size_t errlen)
{
	FILE *f;
	char *buf = NULL;
	size_t len = 0, cap = 0, n;
	config_status st;

	*out = NULL;
	f = fopen(path, "rb");
	if (!f) {
		snprintf(err, errlen, "%s: cannot read config: %s", path, strerror(errno));
		return CONFIG_ERR_NOFILE;
	}
	do {
		if (cap - len < 4096) {
			char *nb = realloc(buf, cap = cap * 2 + 8192);
			if (!nb) {
				free(buf);
				fclose(f);
				snprintf(err, errlen, "out of memory");
				return CONFIG_ERR_NOMEM;
			}
			buf = nb;
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (len > CONFIG_MAX_BYTES) {
			/* /dev/zero or a log given by mistake: stop reading */
			snprintf(err, errlen, "%s: config file is larger than %d kB: refused", path, CONFIG_MAX_BYTES / 1024);
			free(buf);
			fclose(f);
			return CONFIG_ERR_INVALID;
		}
	} while (n > 0);
	if (ferror(f)) {
		snprintf(err, errlen, "%s: cannot read config: %s", path, strerror(errno));
		free(buf);
		fclose(f);
		return CONFIG_ERR_NOFILE;
	}
	fclose(f);
	buf[len] = '\0';
	if (strlen(buf) != len) {
		snprintf(err, errlen, "%s: config contains a NUL byte", path);
		free(buf);
		return CONFIG_ERR_INVALID;
	}
	st = config_parse_string(buf, path, out, err, errlen);
	free(buf);
	return st;
}

void config_free(config *cfg)
{
	if (!cfg)
		return;
	for (int i = 0; i < N_KEYS; i++)
		if (cfg_keys[i].type == CFG_STR || cfg_keys[i].type == CFG_PATH ||
		    cfg_keys[i].type == CFG_LUA_PATH || cfg_keys[i].type == CFG_NAMES)
			free(*(char **)((char *)cfg + cfg_keys[i].offset));
	free(cfg->path);
	free(cfg->dir);
	free(cfg);
}

void config_diff_restart_only(const config *a, const config *b, char *buf, size_t len)
{
	size_t used = 0;
	buf[0] = '\0';
	for (int i = 0; i < N_KEYS; i++) {
		const cfg_key *k = &cfg_keys[i];
		const char *x, *y;
		if (k->restart_only && k->type == CFG_INT &&
		    *(const int *)((const char *)a + k->offset) != *(const int *)((const char *)b + k->offset)) {
			int n = snprintf(buf + used, len - used, "%s%s", used ? ", " : "", k->name);
			if (n < 0 || (size_t)n >= len - used)
				break;
			used += (size_t)n;
			continue;
		}
		if (!k->restart_only || (k->type != CFG_STR && k->type != CFG_PATH))
			continue;
		x = *(char *const *)((const char *)a + k->offset);
		y = *(char *const *)((const char *)b + k->offset);
		if ((x == NULL) != (y == NULL) || (x && strcmp(x, y) != 0)) {
			int n = snprintf(buf + used, len - used, "%s%s", used ? ", " : "", k->name);
			if (n < 0 || (size_t)n >= len - used)
				break;
			used += (size_t)n;
		}
	}
}

int config_keep_restart_only(const config *running, config *next)
{
	for (int i = 0; i < N_KEYS; i++) {
		const cfg_key *k = &cfg_keys[i];
		char **dst, *const *src, *copy = NULL;
		if (k->restart_only && k->type == CFG_INT)
			*(int *)((char *)next + k->offset) = *(const int *)((const char *)running + k->offset);
		if (!k->restart_only || (k->type != CFG_STR && k->type != CFG_PATH))
			continue;
		src = (char *const *)((const char *)running + k->offset);
		dst = (char **)((char *)next + k->offset);
		if (*src && !(copy = strdup(*src)))
			return -1;
		free(*dst);
		*dst = copy;
	}
	return 0;
}

void config_print_sample(FILE *out)
{
	fprintf(out, "# pgqlua consumer config: every key with its default.\n"
	             "# Values may use ${VAR} and ${VAR:-default} from the environment.\n");
	for (int i = 0; i < N_KEYS; i++) {
		const cfg_key *k = &cfg_keys[i];
		fprintf(out, "\n# %s (%s%s%s)\n", k->help, config_type_name(k->type),
		        k->required ? ", required" : "", k->restart_only ? ", needs a restart" : "");
		if (k->def && strcmp(k->def, "-1") != 0)
			fprintf(out, "#%s: %s\n", k->name, k->def);
		else
			fprintf(out, "#%s:\n", k->name);
	}
}

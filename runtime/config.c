/*
 * config.c - parse a consumer's YAML config (see config.h).  One key table
 * drives parsing, defaults, --sample-config and the documentation check.
 */
#include "config.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* a config is a few hundred bytes; more is not a config */
#define CONFIG_MAX_BYTES (1024 * 1024)

/* about 100 years: more overflows PostgreSQL intervals and poll() */
#define CFG_SECONDS_MAX 3.2e9

typedef enum cfg_type {
	CFG_STR,
	CFG_PATH,      /* a string resolved against the config's folder */
	CFG_INT,
	CFG_SECONDS,   /* a non-negative number */
	CFG_BYTES,     /* a non-negative integer, with optional kB/MB/GB */
	CFG_LEVEL,
	CFG_BOOL,
	CFG_REMOTE_MODE,
	CFG_LUA_PATH,  /* require templates, ';'-separated, relative ones resolved */
	CFG_NAMES      /* a list of environment variable names (or one string of them) */
} cfg_type;

typedef struct cfg_key {
	const char *name;
	cfg_type type;
	size_t offset;
	const char *def;       /* NULL: no default */
	int required;
	int restart_only;      /* ignored by a reload */
	const char *help;
} cfg_key;

#define OFF(f) offsetof(config, f)

static const cfg_key cfg_keys[] = {
	{"queue_name", CFG_STR, OFF(queue_name), NULL, 1, 1, "PgQ queue to consume"},
	{"consumer_name", CFG_STR, OFF(consumer_name), NULL, 1, 1, "consumer name registered on the queue"},
	{"db", CFG_STR, OFF(db), NULL, 1, 1, "libpq conninfo or URI of the queue's database"},
	{"target_db", CFG_STR, OFF(target_db), NULL, 0, 1, "remote consumer: libpq conninfo or URI of the database the script's db writes to"},
	{"timezone", CFG_STR, OFF(timezone), "UTC", 0, 1, "TimeZone of every connection the runtime opens: ev.time and the batch's tick times are shown in it"},
	{"remote_mode", CFG_REMOTE_MODE, OFF(remote_event_mode), "batch", 0, 0, "remote consumer: batch (one target transaction per batch) or event (one per event)"},
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
	{"http_timeout", CFG_SECONDS, OFF(http_timeout), "30", 0, 0, "seconds one pgq.http request may take when the request gives no timeout"},
	{"http_concurrency", CFG_INT, OFF(http_concurrency), "16", 0, 0, "pgq.http.send requests in flight at most"},
	{"http_max_body", CFG_BYTES, OFF(http_max_body), "10MB", 0, 0, "largest response body pgq.http reads; a longer one is an error"},
	{"http_ca_file", CFG_PATH, OFF(http_ca_file), NULL, 0, 0, "PEM file of CA certificates pgq.http trusts besides the system's, relative to this file"},
	{"http_idempotency_key", CFG_BOOL, OFF(http_idempotency_key), "true", 0, 0, "add Idempotency-Key: queue/consumer/event id to every pgq.http request made for an event"},
	{"pidfile", CFG_PATH, OFF(pidfile), NULL, 0, 1, "pid file, relative to this file"},
	{"logfile", CFG_PATH, OFF(logfile), NULL, 0, 0, "log file, relative to this file (unset: stderr)"},
	{"log_level", CFG_LEVEL, OFF(log_level), "info", 0, 0, "error, warn, info, debug or trace"},
	{"log_syslog", CFG_BOOL, OFF(log_syslog), "false", 0, 0, "log to syslog (facility daemon) instead of stderr or logfile"},
	{"shutdown_timeout", CFG_SECONDS, OFF(shutdown_timeout), "60", 0, 0, "seconds `pgqlua stop` waits for the current batch to finish"},
};

#define N_KEYS ((int)(sizeof(cfg_keys) / sizeof(cfg_keys[0])))

const char *config_key_name(int i)
{
	return (i >= 0 && i < N_KEYS) ? cfg_keys[i].name : NULL;
}

static const char *type_name(cfg_type t)
{
	switch (t) {
	case CFG_STR: return "a string";
	case CFG_PATH: return "a path";
	case CFG_INT: return "an integer";
	case CFG_SECONDS: return "a number of seconds";
	case CFG_BYTES: return "a size in bytes";
	case CFG_LEVEL: return "a log level";
	case CFG_BOOL: return "true or false";
	case CFG_REMOTE_MODE: return "batch or event";
	case CFG_LUA_PATH: return "require templates";
	case CFG_NAMES: return "a list of names";
	}
	return "?";
}

char *config_expand_env(const char *s, char *err, size_t errlen)
{
	size_t cap = strlen(s) + 64, len = 0;
	char *out = malloc(cap);
	if (!out) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	while (*s) {
		const char *val = NULL;
		size_t vlen = 0;
		char name[256];
		if (s[0] == '$' && s[1] == '{') {
			const char *start = s + 2, *end = strchr(start, '}');
			const char *colon;
			size_t nlen;
			if (!end) {
				snprintf(err, errlen, "unterminated ${ in value");
				free(out);
				return NULL;
			}
			colon = memchr(start, ':', (size_t)(end - start));
			nlen = (size_t)((colon ? colon : end) - start);
			if (nlen == 0 || nlen >= sizeof(name)) {
				snprintf(err, errlen, "bad variable name in ${...}");
				free(out);
				return NULL;
			}
			memcpy(name, start, nlen);
			name[nlen] = '\0';
			val = getenv(name);
			if (colon && colon[1] == '-') {
				if (!val || !*val) {
					val = colon + 2;
					vlen = (size_t)(end - val);
				} else
					vlen = strlen(val);
			} else if (colon) {
				snprintf(err, errlen, "bad ${%s:...}: only ${VAR:-default} is supported", name);
				free(out);
				return NULL;
			} else if (!val) {
				snprintf(err, errlen, "environment variable %s is not set", name);
				free(out);
				return NULL;
			} else
				vlen = strlen(val);
			s = end + 1;
		} else {
			val = s;
			vlen = 1;
			s++;
		}
		if (len + vlen + 1 > cap) {
			char *n;
			cap = (len + vlen + 1) * 2;
			n = realloc(out, cap);
			if (!n) {
				free(out);
				snprintf(err, errlen, "out of memory");
				return NULL;
			}
			out = n;
		}
		memcpy(out + len, val, vlen);
		len += vlen;
	}
	out[len] = '\0';
	return out;
}

static char *join_dir(const char *dir, const char *p)
{
	size_t n;
	char *out;
	if (p[0] == '/' || !dir || !*dir)
		return strdup(p);
	n = strlen(dir) + strlen(p) + 2;
	out = malloc(n);
	if (out)
		snprintf(out, n, "%s/%s", dir, p);
	return out;
}

/* lua_path: ';'-separated templates, each holding '?'; relative ones
 * resolved against the config's folder. */
static int set_lua_path(config *cfg, const cfg_key *k, const char *v, char *err, size_t errlen)
{
	size_t parts = 1, cap, used = 0;
	char *out;
	const char *p = v;

	for (const char *q = v; *q; q++)
		parts += *q == ';';
	cap = strlen(v) + parts * (strlen(cfg->dir ? cfg->dir : "") + 2) + 1;
	out = malloc(cap);

	if (!out) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	out[0] = '\0';
	for (;;) {
		const char *e = strchr(p, ';');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		char *full, *tmpl = strndup(p, n);
		if (!tmpl || n == 0 || !memchr(p, '?', n)) {
			free(tmpl);
			free(out);
			if (!tmpl)
				snprintf(err, errlen, "out of memory");
			else
				snprintf(err, errlen, "%s must be templates like lib/?.lua separated by ';', each with a '?'", k->name);
			return -1;
		}
		full = join_dir(cfg->dir, tmpl);
		free(tmpl);
		if (!full || used + strlen(full) + 2 > cap) {
			free(full);
			free(out);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		used += (size_t)snprintf(out + used, cap - used, "%s%s", used ? ";" : "", full);
		free(full);
		if (!e)
			break;
		p = e + 1;
	}
	free(cfg->lua_path);
	cfg->lua_path = out;
	return 0;
}

/* env_allow: add names (one list item, or a string of names separated by
 * commas or spaces) to the comma-separated list. */
static int add_names(config *cfg, const cfg_key *k, const char *v, char *err, size_t errlen)
{
	char **field = (char **)((char *)cfg + k->offset);
	size_t old = *field ? strlen(*field) : 0;
	char *out = malloc(old + strlen(v) + 2), *o;
	const char *p = v;

	if (!out) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	memcpy(out, *field ? *field : "", old);
	o = out + old;
	while (*p) {
		const char *s = p;
		if (*p == ',' || *p == ' ' || *p == '\t') {
			p++;
			continue;
		}
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || *p == '_'))
			goto bad;
		while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')
			p++;
		if (*p && *p != ',' && *p != ' ' && *p != '\t')
			goto bad;
		if (o > out)
			*o++ = ',';
		memcpy(o, s, (size_t)(p - s));
		o += p - s;
	}
	*o = '\0';
	free(*field);
	*field = out;
	return 0;
bad:
	free(out);
	snprintf(err, errlen, "%s must list environment variable names (letters, digits and _)", k->name);
	return -1;
}

/* Store one scalar into cfg; returns 0 or -1 with err (no position). */
static int set_value(config *cfg, const cfg_key *k, const char *v, char *err, size_t errlen)
{
	char *end;
	void *field = (char *)cfg + k->offset;

	switch (k->type) {
	case CFG_STR:
	case CFG_PATH: {
		char *copy = k->type == CFG_PATH ? join_dir(cfg->dir, v) : strdup(v);
		char *real = copy && k->offset == OFF(script) ? realpath(copy, NULL) : NULL;
		if (real) {
			free(copy);
			copy = real;
		}
		if (!copy) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		free(*(char **)field);
		*(char **)field = copy;
		return 0;
	}
	case CFG_INT: {
		long n;
		errno = 0;
		n = strtol(v, &end, 10);
		if (errno || end == v || *end || n < 0 || n > INT_MAX) {
			snprintf(err, errlen, "%s must be a non-negative integer, not \"%s\"", k->name, v);
			return -1;
		}
		*(int *)field = (int)n;
		return 0;
	}
	case CFG_SECONDS: {
		double d;
		errno = 0;
		d = strtod(v, &end);
		if (errno || end == v || *end || !isfinite(d) || d > CFG_SECONDS_MAX || (d < 0 && !(strcmp(v, "-1") == 0 && k->def && strcmp(k->def, "-1") == 0))) {
			snprintf(err, errlen, "%s must be a non-negative number of seconds, not \"%s\"", k->name, v);
			return -1;
		}
		*(double *)field = d;
		return 0;
	}
	case CFG_BYTES: {
		long long n, mult;
		errno = 0;
		n = strtoll(v, &end, 10);
		if (errno || end == v || n < 0)
			goto bad_bytes;
		while (*end == ' ')
			end++;
		if (*end == '\0' || strcmp(end, "B") == 0)
			mult = 1;
		else if (strcmp(end, "kB") == 0 || strcmp(end, "KB") == 0)
			mult = 1024;
		else if (strcmp(end, "MB") == 0)
			mult = 1024 * 1024;
		else if (strcmp(end, "GB") == 0)
			mult = 1024LL * 1024 * 1024;
		else
			goto bad_bytes;
		if (n > LLONG_MAX / mult)
			goto bad_bytes;
		*(long long *)field = n * mult;
		return 0;
	bad_bytes:
		snprintf(err, errlen, "%s must be a size like 64MB, not \"%s\"", k->name, v);
		return -1;
	}
	case CFG_LUA_PATH:
		return set_lua_path(cfg, k, v, err, errlen);
	case CFG_NAMES:
		return add_names(cfg, k, v, err, errlen);
	case CFG_REMOTE_MODE:
		if (strcmp(v, "batch") == 0 || strcmp(v, "event") == 0) {
			*(int *)field = strcmp(v, "event") == 0;
			return 0;
		}
		snprintf(err, errlen, "%s must be batch or event, not \"%s\"", k->name, v);
		return -1;
	case CFG_BOOL:
		if (strcmp(v, "true") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "on") == 0)
			*(int *)field = 1;
		else if (strcmp(v, "false") == 0 || strcmp(v, "no") == 0 || strcmp(v, "off") == 0)
			*(int *)field = 0;
		else {
			snprintf(err, errlen, "%s must be true or false, not \"%s\"", k->name, v);
			return -1;
		}
		return 0;
	case CFG_LEVEL: {
		int lvl = log_level_parse(v);
		if (lvl < 0) {
			snprintf(err, errlen, "%s must be error, warn, info, debug or trace, not \"%s\"", k->name, v);
			return -1;
		}
		*(int *)field = lvl;
		return 0;
	}
	}
	return -1;
}

/* A required string that expanded to "" (a path then ends in '/'). */
static int cfg_value_empty(const config *cfg, const cfg_key *k)
{
	const char *v;
	size_t n;
	if (k->type != CFG_STR && k->type != CFG_PATH)
		return 0;
	v = *(char *const *)((const char *)cfg + k->offset);
	n = v ? strlen(v) : 0;
	return n == 0 || (k->type == CFG_PATH && v[n - 1] == '/');
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
		if (cfg_keys[i].def && set_value(cfg, &cfg_keys[i], cfg_keys[i].def, err, sizeof(err)) != 0) {
			config_free(cfg);
			return NULL;
		}
	return cfg;
}

static config_status parse_events(yaml_parser_t *p, config *cfg, const char *name,
                                  char *err, size_t errlen)
{
	yaml_event_t ev;
	int depth = 0, seen[N_KEYS];
	const cfg_key *key = NULL;
	config_status st = CONFIG_ERR_INVALID;
	int done = 0, have_root = 0, in_list = 0;

	memset(seen, 0, sizeof(seen));
	while (!done) {
		size_t line, col;
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
		line = ev.start_mark.line + 1;
		col = ev.start_mark.column + 1;
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = 1;
			break;
		case YAML_MAPPING_START_EVENT:
			if (depth > 0 || have_root || in_list) {
				snprintf(err, errlen, "%s:%zu:%zu: %s must be %s, not a mapping", name, line, col,
				         key ? key->name : "value", key ? type_name(key->type) : "a scalar");
				goto fail;
			}
			depth++;
			have_root = 1;
			break;
		case YAML_MAPPING_END_EVENT:
			depth--;
			break;
		case YAML_SEQUENCE_START_EVENT:
			if (key && key->type == CFG_NAMES && !in_list) {
				in_list = 1;   /* its items are added one by one */
				break;
			}
			snprintf(err, errlen, "%s:%zu:%zu: %s must be %s, not a list", name, line, col,
			         key ? key->name : "the config", key ? type_name(key->type) : "a mapping of keys");
			goto fail;
		case YAML_SEQUENCE_END_EVENT:
			in_list = 0;
			key = NULL;
			break;
		case YAML_ALIAS_EVENT:
			snprintf(err, errlen, "%s:%zu:%zu: YAML aliases are not supported", name, line, col);
			goto fail;
		case YAML_SCALAR_EVENT: {
			const char *v = (const char *)ev.data.scalar.value;
			if (depth == 0) {
				snprintf(err, errlen, "%s:%zu:%zu: the config must be a mapping of keys", name, line, col);
				goto fail;
			}
			if (!key) {
				key = find_key(v);
				if (!key) {
					snprintf(err, errlen, "%s:%zu:%zu: unknown key \"%s\"", name, line, col, v);
					goto fail;
				}
				if (seen[key - cfg_keys]) {
					snprintf(err, errlen, "%s:%zu:%zu: duplicate key \"%s\"", name, line, col, v);
					goto fail;
				}
				seen[key - cfg_keys] = 1;
			} else {
				char verr[256];
				int plain_null = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
				                 (v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0);
				if (plain_null) {
					if (!in_list)
						seen[key - cfg_keys] = 2;   /* present but null: as if absent */
				} else {
					char *x = config_expand_env(v, verr, sizeof(verr));
					if (!x || set_value(cfg, key, x, verr, sizeof(verr)) != 0) {
						int oom = strcmp(verr, "out of memory") == 0;
						if (x && !oom && strstr(v, "${"))
							/* the expanded value may be a secret in the
							 * wrong key: name the key and what was written */
							snprintf(verr, sizeof(verr), "%s must be %s; \"%.*s\" expands to something else (value not shown)",
							         key->name, type_name(key->type), 160, v);
						st = oom ? CONFIG_ERR_NOMEM : CONFIG_ERR_INVALID;
						free(x);
						snprintf(err, errlen, "%s:%zu:%zu: %s", name, line, col, verr);
						goto fail;
					}
					free(x);
					if (key->required && cfg_value_empty(cfg, key)) {
						snprintf(err, errlen, "%s:%zu:%zu: %s must not be empty", name, line, col, key->name);
						goto fail;
					}
					if (key->offset == OFF(fetch_size) && cfg->fetch_size < 1) {
						snprintf(err, errlen, "%s:%zu:%zu: fetch_size must be at least 1", name, line, col);
						goto fail;
					}
				}
				if (!in_list)
					key = NULL;
			}
			break;
		}
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	if (!have_root) {
		snprintf(err, errlen, "%s:1:1: the config is empty", name);
		return CONFIG_ERR_INVALID;
	}
	for (int i = 0; i < N_KEYS; i++)
		if (cfg_keys[i].required && seen[i] != 1) {
			snprintf(err, errlen, "%s:1:1: missing required key \"%s\"", name, cfg_keys[i].name);
			return CONFIG_ERR_INVALID;
		}
	return CONFIG_OK;
fail:
	yaml_event_delete(&ev);
	return st;
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
		fprintf(out, "\n# %s (%s%s%s)\n", k->help, type_name(k->type),
		        k->required ? ", required" : "", k->restart_only ? ", needs a restart" : "");
		if (k->def && strcmp(k->def, "-1") != 0)
			fprintf(out, "#%s: %s\n", k->name, k->def);
		else
			fprintf(out, "#%s:\n", k->name);
	}
}

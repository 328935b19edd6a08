/*
 * test_config.c - data-driven unit test of runtime/config.c: defaults, every
 * key, exact error messages, ${VAR} expansion, null values, the restart-only
 * diff, config_load and the key table.  Plain C11, TAP-style output, a final
 * "N passed, M failed" line, exit status 1 on any failure.
 */
#include "config.h"
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int n_pass, n_fail;

static void result(int ok, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void result(int ok, const char *fmt, ...)
{
	va_list ap;
	if (ok)
		n_pass++;
	else
		n_fail++;
	printf("%s %d - ", ok ? "ok" : "not ok", n_pass + n_fail);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

static void check_str(const char *name, const char *got, const char *want)
{
	int ok = (got == NULL && want == NULL) || (got && want && strcmp(got, want) == 0);
	result(ok, "%s", name);
	if (!ok)
		printf("#   got:  %s%s%s\n#   want: %s%s%s\n",
		       got ? "\"" : "", got ? got : "NULL", got ? "\"" : "",
		       want ? "\"" : "", want ? want : "NULL", want ? "\"" : "");
}

static void check_ll(const char *name, long long got, long long want)
{
	result(got == want, "%s", name);
	if (got != want)
		printf("#   got:  %lld\n#   want: %lld\n", got, want);
}

static void check_dbl(const char *name, double got, double want)
{
	result(got == want, "%s", name);
	if (got != want)
		printf("#   got:  %.17g\n#   want: %.17g\n", got, want);
}

/* Parse, reporting a failure (with the error) when the status is not OK. */
static config *parse_ok(const char *name, const char *yaml, const char *file)
{
	config *cfg = NULL;
	char err[512] = "";
	config_status st = config_parse_string(yaml, file, &cfg, err, sizeof(err));
	result(st == CONFIG_OK && cfg != NULL, "%s: parses", name);
	if (st != CONFIG_OK)
		printf("#   status %d: %s\n", (int)st, err);
	return cfg;
}

#define MIN_CFG "queue_name: q\nconsumer_name: c\ndb: dbname=x\nscript: s.lua\n"

/* ------------------------------------------------------------------ */

static void test_defaults(void)
{
	config *cfg = parse_ok("defaults", MIN_CFG, "conf/c.yaml");
	if (!cfg)
		return;
	check_str("defaults: path", cfg->path, "conf/c.yaml");
	check_str("defaults: dir", cfg->dir, "conf");
	check_str("defaults: queue_name", cfg->queue_name, "q");
	check_str("defaults: consumer_name", cfg->consumer_name, "c");
	check_str("defaults: db", cfg->db, "dbname=x");
	check_str("defaults: script resolved against the config's folder", cfg->script, "conf/s.lua");
	check_str("defaults: pidfile unset", cfg->pidfile, NULL);
	check_str("defaults: logfile unset", cfg->logfile, NULL);
	check_dbl("defaults: loop_delay", cfg->loop_delay, 1);
	check_dbl("defaults: retry_delay", cfg->retry_delay, 60);
	check_ll("defaults: max_retries", cfg->max_retries, 5);
	check_ll("defaults: fetch_size", cfg->fetch_size, 300);
	check_ll("defaults: batch_min_count", cfg->batch_min_count, 0);
	check_dbl("defaults: batch_min_interval", cfg->batch_min_interval, -1);
	check_dbl("defaults: batch_min_lag", cfg->batch_min_lag, -1);
	check_dbl("defaults: stats_period", cfg->stats_period, 30);
	check_dbl("defaults: event_timeout", cfg->event_timeout, 0);
	check_ll("defaults: lua_memory_limit", cfg->lua_memory_limit, 0);
	check_ll("defaults: log_level", cfg->log_level, LOG_LVL_INFO);
	config_free(cfg);
}

static void test_script_paths(void)
{
	static const struct {
		const char *file, *script, *want;
	} cases[] = {
		{"conf/c.yaml", "s.lua", "conf/s.lua"},
		{"conf/c.yaml", "lib/s.lua", "conf/lib/s.lua"},
		{"conf/c.yaml", "/abs/s.lua", "/abs/s.lua"},
		{"/etc/pgqlua/c.yaml", "s.lua", "/etc/pgqlua/s.lua"},
		{"c.yaml", "s.lua", "./s.lua"},
		{"c.yaml", "/abs/s.lua", "/abs/s.lua"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char yaml[256], name[256];
		config *cfg;
		snprintf(yaml, sizeof(yaml), "queue_name: q\nconsumer_name: c\ndb: d\nscript: %s\n", cases[i].script);
		snprintf(name, sizeof(name), "script path %s + %s", cases[i].file, cases[i].script);
		cfg = parse_ok(name, yaml, cases[i].file);
		if (cfg)
			check_str(name, cfg->script, cases[i].want);
		config_free(cfg);
	}
}

static void test_all_keys(void)
{
	static const char yaml[] =
		"queue_name: myqueue\n"
		"consumer_name: \"my consumer\"\n"
		"db: 'host=db1 dbname=app'\n"
		"script: handlers/main.lua\n"
		"pidfile: run/c.pid\n"
		"logfile: /var/log/c.log\n"
		"log_level: debug\n"
		"loop_delay: 0.25\n"
		"retry_delay: 120\n"
		"max_retries: 0\n"
		"fetch_size: 1000\n"
		"batch_min_count: 50\n"
		"batch_min_interval: 2.5\n"
		"batch_min_lag: 0\n"
		"stats_period: 0\n"
		"event_timeout: 1.5\n"
		"lua_memory_limit: 64MB\n";
	config *cfg = parse_ok("all keys", yaml, "etc/c.yaml");
	if (!cfg)
		return;
	check_str("all keys: queue_name", cfg->queue_name, "myqueue");
	check_str("all keys: consumer_name (double-quoted)", cfg->consumer_name, "my consumer");
	check_str("all keys: db (single-quoted)", cfg->db, "host=db1 dbname=app");
	check_str("all keys: script", cfg->script, "etc/handlers/main.lua");
	check_str("all keys: pidfile relative", cfg->pidfile, "etc/run/c.pid");
	check_str("all keys: logfile absolute", cfg->logfile, "/var/log/c.log");
	check_ll("all keys: log_level", cfg->log_level, LOG_LVL_DEBUG);
	check_dbl("all keys: loop_delay", cfg->loop_delay, 0.25);
	check_dbl("all keys: retry_delay", cfg->retry_delay, 120);
	check_ll("all keys: max_retries", cfg->max_retries, 0);
	check_ll("all keys: fetch_size", cfg->fetch_size, 1000);
	check_ll("all keys: batch_min_count", cfg->batch_min_count, 50);
	check_dbl("all keys: batch_min_interval", cfg->batch_min_interval, 2.5);
	check_dbl("all keys: batch_min_lag", cfg->batch_min_lag, 0);
	check_dbl("all keys: stats_period", cfg->stats_period, 0);
	check_dbl("all keys: event_timeout", cfg->event_timeout, 1.5);
	check_ll("all keys: lua_memory_limit", cfg->lua_memory_limit, 67108864LL);
	config_free(cfg);
}

/* env_allow (a list, a flow list or one string of names), lua_path
 * (templates resolved against the config's folder), timezone. */
static void test_sandbox_keys(void)
{
	static const struct {
		const char *name, *yaml, *env_allow, *lua_path, *timezone;
	} cases[] = {
		{"defaults", MIN_CFG, NULL, NULL, "UTC"},
		{"block list", MIN_CFG "env_allow:\n  - HOME\n  - APP_MODE\nlua_path: lib/?.lua\n", "HOME,APP_MODE",
		 "etc/lib/?.lua", "UTC"},
		{"flow list", MIN_CFG "env_allow: [A_1, _b]\nlua_path: /opt/?.lua;x/?/init.lua\n", "A_1,_b",
		 "/opt/?.lua;etc/x/?/init.lua", "UTC"},
		{"one string of names", MIN_CFG "env_allow: \"A, B C\"\ntimezone: Asia/Kolkata\n", "A,B,C", NULL,
		 "Asia/Kolkata"},
		{"empty list", MIN_CFG "env_allow: []\n", NULL, NULL, "UTC"},
		{"lua_modules and smtp_url", MIN_CFG "lua_modules: [cjson, lpeg]\nsmtp_url: SMTPS://u:pw@h:465\n", NULL, NULL,
		 "UTC"},
	};
	static const struct {
		const char *name, *yaml, *want;
	} bad[] = {
		{"env_allow: a bad name", MIN_CFG "env_allow: [HOME, A=B]\n",
		 "t.yaml:5:19: env_allow must list environment variable names (letters, digits and _)"},
		{"env_allow: a nested list", MIN_CFG "env_allow: [[A]]\n",
		 "t.yaml:5:13: env_allow must be a list of names, not a list"},
		{"env_allow: a mapping", MIN_CFG "env_allow: [{a: b}]\n",
		 "t.yaml:5:13: env_allow must be a list of names, not a mapping"},
		{"lua_path: no ?", MIN_CFG "lua_path: lib/x.lua\n",
		 "t.yaml:5:11: lua_path must be templates like lib/?.lua separated by ';', each with a '?'"},
		{"lua_path: an empty template", MIN_CFG "lua_path: \"a/?.lua;;\"\n",
		 "t.yaml:5:11: lua_path must be templates like lib/?.lua separated by ';', each with a '?'"},
		{"a list for a string key", MIN_CFG "timezone: [UTC]\n", "t.yaml:5:11: timezone must be a string, not a list"},
		{"smtp_url: not SMTP, the value (a password) not shown", MIN_CFG "smtp_url: http://u:s3cret@h\n",
		 "t.yaml:5:11: smtp_url must start with smtp:// or smtps://"},
		{"lua_modules: a path", MIN_CFG "lua_modules: [../x]\n",
		 "t.yaml:5:15: lua_modules must list module names (letters, digits and _)"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		config *cfg = parse_ok(cases[i].name, cases[i].yaml, "etc/c.yaml");
		char label[128];
		if (!cfg)
			continue;
		snprintf(label, sizeof(label), "%s: env_allow", cases[i].name);
		check_str(label, cfg->env_allow, cases[i].env_allow);
		snprintf(label, sizeof(label), "%s: lua_path", cases[i].name);
		check_str(label, cfg->lua_path, cases[i].lua_path);
		snprintf(label, sizeof(label), "%s: timezone", cases[i].name);
		check_str(label, cfg->timezone, cases[i].timezone);
		if (i == sizeof(cases) / sizeof(cases[0]) - 1) {
			check_str("lua_modules: the list", cfg->lua_modules, "cjson,lpeg");
			check_str("smtp_url: kept as written", cfg->smtp_url, "SMTPS://u:pw@h:465");
		}
		config_free(cfg);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		config *cfg = NULL;
		char err[512] = "";
		config_status st = config_parse_string(bad[i].yaml, "t.yaml", &cfg, err, sizeof(err));
		int ok = st == CONFIG_ERR_INVALID && !cfg && strcmp(err, bad[i].want) == 0;
		result(ok, "error: %s", bad[i].name);
		if (!ok)
			printf("#   got:  \"%s\"\n#   want: \"%s\"\n", err, bad[i].want);
		config_free(cfg);
	}
}

/* One key set to a value: the field it lands in, as a long long or double. */
static void test_values(void)
{
	enum { LL, DBL };
	static const struct {
		const char *key, *value;
		int kind;
		long long want_ll;
		double want_dbl;
	} cases[] = {
		{"lua_memory_limit", "0", LL, 0, 0},
		{"lua_memory_limit", "100", LL, 100, 0},
		{"lua_memory_limit", "100B", LL, 100, 0},
		{"lua_memory_limit", "2kB", LL, 2048, 0},
		{"lua_memory_limit", "2KB", LL, 2048, 0},
		{"lua_memory_limit", "64MB", LL, 67108864LL, 0},
		{"lua_memory_limit", "64 MB", LL, 67108864LL, 0},
		{"lua_memory_limit", "3GB", LL, 3221225472LL, 0},
		{"log_level", "error", LL, LOG_LVL_ERROR, 0},
		{"log_level", "warn", LL, LOG_LVL_WARN, 0},
		{"log_level", "warning", LL, LOG_LVL_WARN, 0},
		{"log_level", "info", LL, LOG_LVL_INFO, 0},
		{"log_level", "debug", LL, LOG_LVL_DEBUG, 0},
		{"log_level", "trace", LL, LOG_LVL_TRACE, 0},
		{"log_level", "DEBUG", LL, LOG_LVL_DEBUG, 0},
		{"max_retries", "0", LL, 0, 0},
		{"max_retries", "2147483647", LL, 2147483647LL, 0},
		{"fetch_size", "1", LL, 1, 0},
		{"batch_min_count", "10", LL, 10, 0},
		{"loop_delay", "0", DBL, 0, 0},
		{"loop_delay", "0.001", DBL, 0, 0.001},
		{"loop_delay", "1e1", DBL, 0, 10},
		{"retry_delay", "\"30\"", DBL, 0, 30},
		{"batch_min_interval", "-1", DBL, 0, -1},
		{"batch_min_lag", "-1", DBL, 0, -1},
		{"batch_min_lag", "0.5", DBL, 0, 0.5},
		{"stats_period", "5", DBL, 0, 5},
		{"event_timeout", "0", DBL, 0, 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char yaml[512], name[256];
		config *cfg;
		snprintf(yaml, sizeof(yaml), MIN_CFG "%s: %s\n", cases[i].key, cases[i].value);
		snprintf(name, sizeof(name), "value %s: %s", cases[i].key, cases[i].value);
		cfg = parse_ok(name, yaml, "c.yaml");
		if (!cfg)
			continue;
		if (strcmp(cases[i].key, "lua_memory_limit") == 0)
			check_ll(name, cfg->lua_memory_limit, cases[i].want_ll);
		else if (strcmp(cases[i].key, "log_level") == 0)
			check_ll(name, cfg->log_level, cases[i].want_ll);
		else if (strcmp(cases[i].key, "max_retries") == 0)
			check_ll(name, cfg->max_retries, cases[i].want_ll);
		else if (strcmp(cases[i].key, "fetch_size") == 0)
			check_ll(name, cfg->fetch_size, cases[i].want_ll);
		else if (strcmp(cases[i].key, "batch_min_count") == 0)
			check_ll(name, cfg->batch_min_count, cases[i].want_ll);
		else if (strcmp(cases[i].key, "loop_delay") == 0)
			check_dbl(name, cfg->loop_delay, cases[i].want_dbl);
		else if (strcmp(cases[i].key, "retry_delay") == 0)
			check_dbl(name, cfg->retry_delay, cases[i].want_dbl);
		else if (strcmp(cases[i].key, "batch_min_interval") == 0)
			check_dbl(name, cfg->batch_min_interval, cases[i].want_dbl);
		else if (strcmp(cases[i].key, "batch_min_lag") == 0)
			check_dbl(name, cfg->batch_min_lag, cases[i].want_dbl);
		else if (strcmp(cases[i].key, "stats_period") == 0)
			check_dbl(name, cfg->stats_period, cases[i].want_dbl);
		else if (strcmp(cases[i].key, "event_timeout") == 0)
			check_dbl(name, cfg->event_timeout, cases[i].want_dbl);
		else
			result(0, "%s: no field check for this key", name);
		config_free(cfg);
	}
}

/* ------------------------------------------------------------------ */

static void test_errors(void)
{
	static const struct {
		const char *name, *yaml, *want;
		int prefix;     /* compare only the first strlen(want) characters */
	} cases[] = {
		{"unknown key", MIN_CFG "bogus: 1\n", "t.yaml:5:1: unknown key \"bogus\"", 0},
		{"unknown key, indented flow mapping",
		 "{queue_name: q, consumer_name: c,\n  db: d, script: s, bogus: 1}\n",
		 "t.yaml:2:21: unknown key \"bogus\"", 0},
		{"unknown key first", "queue: q\n", "t.yaml:1:1: unknown key \"queue\"", 0},
		{"duplicate key", MIN_CFG "queue_name: r\n", "t.yaml:5:1: duplicate key \"queue_name\"", 0},
		{"duplicate optional key", MIN_CFG "loop_delay: 1\nloop_delay: 2\n",
		 "t.yaml:6:1: duplicate key \"loop_delay\"", 0},
		{"loop_delay: abc", MIN_CFG "loop_delay: abc\n",
		 "t.yaml:5:13: loop_delay must be a non-negative number of seconds, not \"abc\"", 0},
		{"loop_delay: -2", MIN_CFG "loop_delay: -2\n",
		 "t.yaml:5:13: loop_delay must be a non-negative number of seconds, not \"-2\"", 0},
		{"loop_delay: -1 (only unset-able knobs take -1)", MIN_CFG "loop_delay: -1\n",
		 "t.yaml:5:13: loop_delay must be a non-negative number of seconds, not \"-1\"", 0},
		{"retry_delay: -1", MIN_CFG "retry_delay: -1\n",
		 "t.yaml:5:14: retry_delay must be a non-negative number of seconds, not \"-1\"", 0},
		{"loop_delay: 1s", MIN_CFG "loop_delay: 1s\n",
		 "t.yaml:5:13: loop_delay must be a non-negative number of seconds, not \"1s\"", 0},
		{"loop_delay: inf", MIN_CFG "loop_delay: inf\n",
		 "t.yaml:5:13: loop_delay must be a non-negative number of seconds, not \"inf\"", 0},
		{"batch_min_lag: -0.5", MIN_CFG "batch_min_lag: -0.5\n",
		 "t.yaml:5:16: batch_min_lag must be a non-negative number of seconds, not \"-0.5\"", 0},
		{"max_retries: -1", MIN_CFG "max_retries: -1\n",
		 "t.yaml:5:14: max_retries must be a non-negative integer, not \"-1\"", 0},
		{"max_retries: 1.5", MIN_CFG "max_retries: 1.5\n",
		 "t.yaml:5:14: max_retries must be a non-negative integer, not \"1.5\"", 0},
		{"max_retries: too big", MIN_CFG "max_retries: 2147483648\n",
		 "t.yaml:5:14: max_retries must be a non-negative integer, not \"2147483648\"", 0},
		{"max_retries: empty string", MIN_CFG "max_retries: \"\"\n",
		 "t.yaml:5:14: max_retries must be a non-negative integer, not \"\"", 0},
		{"log_level: loud", MIN_CFG "log_level: loud\n",
		 "t.yaml:5:12: log_level must be error, warn, info, debug or trace, not \"loud\"", 0},
		{"lua_memory_limit: 12XB", MIN_CFG "lua_memory_limit: 12XB\n",
		 "t.yaml:5:19: lua_memory_limit must be a size like 64MB, not \"12XB\"", 0},
		{"lua_memory_limit: -1", MIN_CFG "lua_memory_limit: -1\n",
		 "t.yaml:5:19: lua_memory_limit must be a size like 64MB, not \"-1\"", 0},
		{"lua_memory_limit: MB", MIN_CFG "lua_memory_limit: MB\n",
		 "t.yaml:5:19: lua_memory_limit must be a size like 64MB, not \"MB\"", 0},
		{"flow mapping as a value", "queue_name: q\nconsumer_name: c\ndb: {host: x}\nscript: s\n",
		 "t.yaml:3:5: db must be a string, not a mapping", 0},
		{"block mapping as a value", MIN_CFG "logfile:\n  path: x\n",
		 "t.yaml:6:3: logfile must be a path, not a mapping", 0},
		{"flow list as a value", MIN_CFG "loop_delay: [1, 2]\n",
		 "t.yaml:5:13: loop_delay must be a number of seconds, not a list", 0},
		{"block list as a value", MIN_CFG "lua_memory_limit:\n  - 1\n",
		 "t.yaml:6:3: lua_memory_limit must be a size in bytes, not a list", 0},
		{"list for log_level", MIN_CFG "log_level: [info]\n",
		 "t.yaml:5:12: log_level must be a log level, not a list", 0},
		{"missing required key db", "queue_name: q\nconsumer_name: c\nscript: s.lua\n",
		 "t.yaml:1:1: missing required key \"db\"", 0},
		{"missing required key queue_name", "consumer_name: c\ndb: d\nscript: s.lua\n",
		 "t.yaml:1:1: missing required key \"queue_name\"", 0},
		{"missing required key script", "queue_name: q\nconsumer_name: c\ndb: d\n",
		 "t.yaml:1:1: missing required key \"script\"", 0},
		{"empty file", "", "t.yaml:1:1: the config is empty", 0},
		{"comments only", "# nothing here\n\n", "t.yaml:1:1: the config is empty", 0},
		{"top-level list", "- queue_name: q\n- db: d\n",
		 "t.yaml:1:1: the config must be a mapping of keys, not a list", 0},
		{"top-level scalar", "hello\n", "t.yaml:1:1: the config must be a mapping of keys", 0},
		{"YAML syntax error: unclosed quote", "queue_name: q\nconsumer_name: c\ndb: d\nscript: s\nloop_delay: \"1\n",
		 "t.yaml:6:1: YAML syntax error", 1},
		{"YAML syntax error: bad indentation", "queue_name: q\n  consumer_name: c\n",
		 "t.yaml:2:16: YAML syntax error", 1},
		{"YAML syntax error: tab indentation", MIN_CFG "\tloop_delay: 1\n",
		 "t.yaml:5:1: YAML syntax error", 1},
		{"YAML alias", "queue_name: &a q\nconsumer_name: *a\n",
		 "t.yaml:2:16: YAML aliases are not supported", 0},
		{"fetch_size: 0", MIN_CFG "fetch_size: 0\n", "t.yaml:5:13: fetch_size must be at least 1", 0},
		{"partitions: 1025", MIN_CFG "partitions: 1025\n", "t.yaml:5:13: partitions must be at most 1024", 0},
		{"partitions: -1", MIN_CFG "partitions: -1\n", "t.yaml:5:13: partitions must be a non-negative integer, not \"-1\"", 0},
		{"workers: 0", MIN_CFG "workers: 0\n", "t.yaml:5:10: workers must be 1 to 256", 0},
		{"unset ${VAR} without default", "queue_name: q\nconsumer_name: c\ndb: \"host=${PGQLUA_T_UNSET}\"\nscript: s\n",
		 "t.yaml:3:5: environment variable PGQLUA_T_UNSET is not set", 0},
		{"unset ${VAR} in a plain scalar", MIN_CFG "pidfile: ${PGQLUA_T_UNSET}/p\n",
		 "t.yaml:5:10: environment variable PGQLUA_T_UNSET is not set", 0},
		{"unterminated ${", MIN_CFG "logfile: /log/${PGQLUA_T_HOST\n",
		 "t.yaml:5:10: unterminated ${ in value", 0},
		{"empty ${}", MIN_CFG "logfile: x${}\n", "t.yaml:5:10: bad variable name in ${...}", 0},
		{"${VAR:x} unsupported", MIN_CFG "logfile: ${PGQLUA_T_HOST:x}\n",
		 "t.yaml:5:10: bad ${PGQLUA_T_HOST:...}: only ${VAR:-default} is supported", 0},
		{"expanded value checked, never shown: ${VAR} -> dbhost", MIN_CFG "fetch_size: ${PGQLUA_T_HOST}\n",
		 "t.yaml:5:13: fetch_size must be an integer; \"${PGQLUA_T_HOST}\" expands to something else (value not shown)", 0},
		{"expanded value in a longer text, never shown", MIN_CFG "log_level: \"x-${PGQLUA_T_HOST}\"\n",
		 "t.yaml:5:12: log_level must be a log level; \"x-${PGQLUA_T_HOST}\" expands to something else (value not shown)", 0},
		{"null required key: db:", "queue_name: q\nconsumer_name: c\ndb:\nscript: s.lua\n",
		 "t.yaml:1:1: missing required key \"db\"", 0},
		{"null required key: db: ~", "queue_name: q\nconsumer_name: c\ndb: ~\nscript: s.lua\n",
		 "t.yaml:1:1: missing required key \"db\"", 0},
		{"null required key: script: null", "queue_name: q\nconsumer_name: c\ndb: d\nscript: null\n",
		 "t.yaml:1:1: missing required key \"script\"", 0},
	};

	setenv("PGQLUA_T_HOST", "dbhost", 1);
	unsetenv("PGQLUA_T_UNSET");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		config *cfg = (config *)&cfg;   /* must be reset to NULL */
		char err[512];
		config_status st;
		int ok;
		memset(err, 'X', sizeof(err));
		err[sizeof(err) - 1] = '\0';
		st = config_parse_string(cases[i].yaml, "t.yaml", &cfg, err, sizeof(err));
		ok = st == CONFIG_ERR_INVALID && cfg == NULL &&
		     (cases[i].prefix ? strncmp(err, cases[i].want, strlen(cases[i].want)) == 0
		                      : strcmp(err, cases[i].want) == 0);
		result(ok, "error: %s", cases[i].name);
		if (!ok) {
			printf("#   status %d (want %d), cfg %s\n", (int)st, (int)CONFIG_ERR_INVALID,
			       cfg ? "set" : "NULL");
			printf("#   got:  \"%s\"\n#   want: \"%s\"%s\n", st == CONFIG_OK ? "(no error)" : err,
			       cases[i].want, cases[i].prefix ? " (prefix)" : "");
		}
		if (st == CONFIG_OK)
			config_free(cfg);
	}
	unsetenv("PGQLUA_T_HOST");
}

/* The error buffer is always a terminated string, even when too small. */
static void test_error_truncation(void)
{
	config *cfg = NULL;
	char err[12];
	config_status st = config_parse_string(MIN_CFG "bogus: 1\n", "t.yaml", &cfg, err, sizeof(err));
	result(st == CONFIG_ERR_INVALID && cfg == NULL && strcmp(err, "t.yaml:5:1:") == 0,
	       "error: message truncated to a small buffer");
}

/* ------------------------------------------------------------------ */

static void test_expand(void)
{
	static char longval[3000];
	static char longwant[3000 * 3 + 8];
	static const struct {
		const char *name, *in, *want;
	} cases[] = {
		{"no variables", "plain text", "plain text"},
		{"empty string", "", ""},
		{"${VAR} set", "${PGQLUA_T_A}", "alpha"},
		{"${VAR:-default} when set", "${PGQLUA_T_A:-zzz}", "alpha"},
		{"${VAR:-default} when unset", "${PGQLUA_T_UNSET:-fallback}", "fallback"},
		{"${VAR:-default} when empty", "${PGQLUA_T_EMPTY:-fallback}", "fallback"},
		{"${VAR} set but empty", "[${PGQLUA_T_EMPTY}]", "[]"},
		{"${VAR:-} empty default", "[${PGQLUA_T_UNSET:-}]", "[]"},
		{"default with dashes and spaces", "${PGQLUA_T_UNSET:-a-b c}", "a-b c"},
		{"default is not expanded", "${PGQLUA_T_UNSET:-$PGQLUA_T_A}", "$PGQLUA_T_A"},
		{"text around several variables", "host=${PGQLUA_T_A} port=${PGQLUA_T_UNSET:-5432} db=${PGQLUA_T_B}!",
		 "host=alpha port=5432 db=beta!"},
		{"adjacent variables", "${PGQLUA_T_A}${PGQLUA_T_B}", "alphabeta"},
		{"value is not re-expanded", "${PGQLUA_T_META}", "${PGQLUA_T_UNSET}"},
		{"$ alone", "$", "$"},
		{"$ at the end", "cost$", "cost$"},
		{"$x untouched", "$x and $PGQLUA_T_A", "$x and $PGQLUA_T_A"},
		{"$$ untouched", "$$", "$$"},
		{"$ before ${VAR}", "$${PGQLUA_T_A}", "$alpha"},
		{"lone braces untouched", "{x} }", "{x} }"},
		{"long value grows the buffer", "${PGQLUA_T_LONG}-${PGQLUA_T_LONG}-${PGQLUA_T_LONG}", longwant},
	};
	static const struct {
		const char *name, *in, *want;
	} errs[] = {
		{"unset ${VAR}", "x ${PGQLUA_T_UNSET} y", "environment variable PGQLUA_T_UNSET is not set"},
		{"unterminated ${", "x ${PGQLUA_T_A", "unterminated ${ in value"},
		{"unterminated ${ after a good one", "${PGQLUA_T_A}${", "unterminated ${ in value"},
		{"empty name", "${}", "bad variable name in ${...}"},
		{"empty name with default", "${:-x}", "bad variable name in ${...}"},
		{"${VAR:x}", "${PGQLUA_T_A:x}", "bad ${PGQLUA_T_A:...}: only ${VAR:-default} is supported"},
		{"${VAR:=x}", "${PGQLUA_T_A:=x}", "bad ${PGQLUA_T_A:...}: only ${VAR:-default} is supported"},
	};

	memset(longval, 'v', sizeof(longval) - 1);
	longval[sizeof(longval) - 1] = '\0';
	snprintf(longwant, sizeof(longwant), "%s-%s-%s", longval, longval, longval);
	setenv("PGQLUA_T_A", "alpha", 1);
	setenv("PGQLUA_T_B", "beta", 1);
	setenv("PGQLUA_T_EMPTY", "", 1);
	setenv("PGQLUA_T_META", "${PGQLUA_T_UNSET}", 1);
	setenv("PGQLUA_T_LONG", longval, 1);
	unsetenv("PGQLUA_T_UNSET");

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char err[256] = "";
		char *got = config_expand_env(cases[i].in, err, sizeof(err));
		char name[128];
		snprintf(name, sizeof(name), "expand: %s", cases[i].name);
		check_str(name, got, cases[i].want);
		if (!got)
			printf("#   err: %s\n", err);
		free(got);
	}
	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		char err[256] = "";
		char *got = config_expand_env(errs[i].in, err, sizeof(err));
		int ok = got == NULL && strcmp(err, errs[i].want) == 0;
		result(ok, "expand error: %s", errs[i].name);
		if (!ok)
			printf("#   result %s%s%s, err \"%s\"\n#   want NULL, err \"%s\"\n", got ? "\"" : "",
			       got ? got : "NULL", got ? "\"" : "", err, errs[i].want);
		free(got);
	}

	/* Expansion inside a parsed config, before type checks and path resolution. */
	{
		config *cfg = parse_ok("expand in config",
			"queue_name: ${PGQLUA_T_A}_q\n"
			"consumer_name: \"${PGQLUA_T_UNSET:-cons}\"\n"
			"db: host=${PGQLUA_T_A} dbname=${PGQLUA_T_B}\n"
			"script: ${PGQLUA_T_B}/s.lua\n"
			"fetch_size: ${PGQLUA_T_UNSET:-42}\n"
			"loop_delay: ${PGQLUA_T_EMPTY:-2.5}\n"
			"log_level: ${PGQLUA_T_UNSET:-trace}\n"
			"lua_memory_limit: ${PGQLUA_T_UNSET:-1kB}\n",
			"conf/c.yaml");
		if (cfg) {
			check_str("expand in config: queue_name", cfg->queue_name, "alpha_q");
			check_str("expand in config: consumer_name", cfg->consumer_name, "cons");
			check_str("expand in config: db", cfg->db, "host=alpha dbname=beta");
			check_str("expand in config: script resolved after expansion", cfg->script, "conf/beta/s.lua");
			check_ll("expand in config: fetch_size", cfg->fetch_size, 42);
			check_dbl("expand in config: loop_delay", cfg->loop_delay, 2.5);
			check_ll("expand in config: log_level", cfg->log_level, LOG_LVL_TRACE);
			check_ll("expand in config: lua_memory_limit", cfg->lua_memory_limit, 1024);
		}
		config_free(cfg);
	}

	unsetenv("PGQLUA_T_A");
	unsetenv("PGQLUA_T_B");
	unsetenv("PGQLUA_T_EMPTY");
	unsetenv("PGQLUA_T_META");
	unsetenv("PGQLUA_T_LONG");
}

/* ------------------------------------------------------------------ */

static void test_nulls(void)
{
	static const struct {
		const char *name, *extra;
	} cases[] = {
		{"pidfile: (empty)", "pidfile:\n"},
		{"pidfile: ~", "pidfile: ~\n"},
		{"pidfile: null", "pidfile: null\n"},
		{"pidfile: ~ and logfile: ~", "pidfile: ~\nlogfile:\n"},
		{"loop_delay: ~ keeps the default", "loop_delay: ~\n"},
		{"log_level: (empty) keeps the default", "log_level:\n"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char yaml[512], name[128];
		config *cfg;
		snprintf(yaml, sizeof(yaml), MIN_CFG "%s", cases[i].extra);
		snprintf(name, sizeof(name), "null %s", cases[i].name);
		cfg = parse_ok(name, yaml, "c.yaml");
		if (!cfg)
			continue;
		result(cfg->pidfile == NULL && cfg->logfile == NULL && cfg->loop_delay == 1 &&
		       cfg->log_level == LOG_LVL_INFO, "%s: optional keys unset, defaults kept", name);
		config_free(cfg);
	}
	/* A quoted "~" is a string, not null. */
	{
		config *cfg = parse_ok("quoted ~ is a string", MIN_CFG "pidfile: \"~\"\n", "c.yaml");
		if (cfg)
			check_str("quoted ~ is a string: pidfile", cfg->pidfile, "./~");
		config_free(cfg);
	}
}

/* ------------------------------------------------------------------ */

static void test_diff(void)
{
	static const struct {
		const char *name, *a, *b, *want;
	} cases[] = {
		{"identical", MIN_CFG, MIN_CFG, ""},
		{"loop_delay is reloadable", MIN_CFG "loop_delay: 1\n", MIN_CFG "loop_delay: 5\n", ""},
		{"script and log_level are reloadable", MIN_CFG,
		 "queue_name: q\nconsumer_name: c\ndb: dbname=x\nscript: t.lua\nlog_level: debug\n", ""},
		{"queue_name changed", MIN_CFG,
		 "queue_name: q2\nconsumer_name: c\ndb: dbname=x\nscript: s.lua\n", "queue_name"},
		{"queue_name and db changed, loop_delay too", MIN_CFG,
		 "queue_name: q2\nconsumer_name: c\ndb: dbname=y\nscript: s.lua\nloop_delay: 9\n", "queue_name, db"},
		{"consumer_name changed", MIN_CFG,
		 "queue_name: q\nconsumer_name: c2\ndb: dbname=x\nscript: s.lua\n", "consumer_name"},
		{"pidfile added", MIN_CFG, MIN_CFG "pidfile: p.pid\n", "pidfile"},
		{"pidfile removed", MIN_CFG "pidfile: p.pid\n", MIN_CFG, "pidfile"},
		{"pidfile changed", MIN_CFG "pidfile: p.pid\n", MIN_CFG "pidfile: q.pid\n", "pidfile"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char name[128], buf[256];
		config *a, *b;
		snprintf(name, sizeof(name), "diff: %s", cases[i].name);
		a = parse_ok(name, cases[i].a, "c.yaml");
		b = parse_ok(name, cases[i].b, "c.yaml");
		if (a && b) {
			memset(buf, 'X', sizeof(buf));
			config_diff_restart_only(a, b, buf, sizeof(buf));
			check_str(name, buf, cases[i].want);
		}
		config_free(a);
		config_free(b);
	}
}

/* ------------------------------------------------------------------ */

static void test_load(void)
{
	char err[512] = "";
	config *cfg = (config *)&cfg;
	config_status st;
	char dir[] = "/tmp/test_config.XXXXXX";
	char path[256];
	FILE *f;

	st = config_load("/nonexistent/pgqlua-test/c.yaml", &cfg, err, sizeof(err));
	result(st == CONFIG_ERR_NOFILE && cfg == NULL, "load missing file: CONFIG_ERR_NOFILE, *out NULL");
	check_str("load missing file: message", err,
	          "/nonexistent/pgqlua-test/c.yaml: cannot read config: No such file or directory");

	if (!mkdtemp(dir)) {
		result(0, "load: mkdtemp");
		return;
	}
	snprintf(path, sizeof(path), "%s/c.yaml", dir);
	f = fopen(path, "w");
	if (!f) {
		result(0, "load: write temp file");
		rmdir(dir);
		return;
	}
	fputs(MIN_CFG "fetch_size: 7\n", f);
	fclose(f);
	st = config_load(path, &cfg, err, sizeof(err));
	result(st == CONFIG_OK && cfg != NULL, "load file: parses");
	if (st != CONFIG_OK)
		printf("#   status %d: %s\n", (int)st, err);
	if (cfg) {
		char want[300];
		check_str("load file: path", cfg->path, path);
		check_str("load file: dir", cfg->dir, dir);
		snprintf(want, sizeof(want), "%s/s.lua", dir);
		check_str("load file: script next to the file", cfg->script, want);
		check_ll("load file: fetch_size", cfg->fetch_size, 7);
		config_free(cfg);
	}

	f = fopen(path, "w");
	if (f) {
		fputs("queue_name: q\nnope: 1\n", f);
		fclose(f);
		st = config_load(path, &cfg, err, sizeof(err));
		{
			char want[300];
			snprintf(want, sizeof(want), "%s:2:1: unknown key \"nope\"", path);
			result(st == CONFIG_ERR_INVALID && cfg == NULL, "load bad file: CONFIG_ERR_INVALID");
			check_str("load bad file: message names the path", err, want);
		}
		if (st == CONFIG_OK)
			config_free(cfg);
	}
	unlink(path);
	rmdir(dir);

	/* an endless file is not read until memory runs out */
	st = config_load("/dev/zero", &cfg, err, sizeof(err));
	result(st == CONFIG_ERR_INVALID && cfg == NULL, "load /dev/zero: CONFIG_ERR_INVALID, *out NULL");
	check_str("load /dev/zero: message", err, "/dev/zero: config file is larger than 1024 kB: refused");
}

/* ------------------------------------------------------------------ */

static void test_key_names(void)
{
	int n = 0, has_queue = 0, has_level = 0, all_parse = 1;
	const char *name;
	for (; (name = config_key_name(n)) != NULL; n++) {
		if (strcmp(name, "queue_name") == 0)
			has_queue = 1;
		if (strcmp(name, "log_level") == 0)
			has_level = 1;
	}
	result(n > 10, "key names: more than 10 keys (%d)", n);
	result(has_queue, "key names: include queue_name");
	result(has_level, "key names: include log_level");
	result(config_key_name(-1) == NULL, "key names: NULL before the start");
	result(config_key_name(n + 5) == NULL, "key names: NULL past the end");

	/* Every listed key is known to the parser (it may fail on the value, not the key). */
	for (int i = 0; i < n; i++) {
		char yaml[512], err[512];
		config *cfg = NULL;
		const char *k = config_key_name(i);
		if (strcmp(k, "queue_name") == 0 || strcmp(k, "consumer_name") == 0 ||
		    strcmp(k, "db") == 0 || strcmp(k, "script") == 0)
			continue;
		snprintf(yaml, sizeof(yaml), MIN_CFG "%s: 1\n", k);
		if (config_parse_string(yaml, "t.yaml", &cfg, err, sizeof(err)) != CONFIG_OK &&
		    strstr(err, "unknown key")) {
			all_parse = 0;
			printf("#   %s: %s\n", k, err);
		}
		config_free(cfg);
	}
	result(all_parse, "key names: every key is accepted by the parser");
}

int main(void)
{
	test_defaults();
	test_script_paths();
	test_all_keys();
	test_values();
	test_sandbox_keys();
	test_errors();
	test_error_truncation();
	test_expand();
	test_nulls();
	test_diff();
	test_load();
	test_key_names();
	printf("%d passed, %d failed\n", n_pass, n_fail);
	return n_fail ? 1 : 0;
}

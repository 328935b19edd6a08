/*
 * config_value.c - the syntax of config values (see config_int.h): numbers,
 * seconds, sizes, choices, paths resolved against the config's folder,
 * require templates, lists of names, and ${VAR} expansion.  Called by
 * config.c for each key.
 */
#include "config_int.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *config_type_name(cfg_type t)
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

/* env_allow, lua_modules: add names (one list item, or a string of names
 * separated by commas or spaces) to the comma-separated list. */
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
	snprintf(err, errlen, "%s must list %s names (letters, digits and _)", k->name,
	         k->offset == OFF(lua_modules) ? "module" : "environment variable");
	return -1;
}

/* Store one scalar into cfg; returns 0 or -1 with err (no position). */
static int set_string(config *cfg, const cfg_key *k, const char *v, char *err, size_t errlen)
{
	char **field = (char **)((char *)cfg + k->offset);
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
	free(*field);
	*field = copy;
	return 0;
}

static int set_int(const cfg_key *k, int *field, const char *v, char *err, size_t errlen)
{
	char *end;
	long n;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < 0 || n > INT_MAX) {
		snprintf(err, errlen, "%s must be a non-negative integer, not \"%s\"", k->name, v);
		return -1;
	}
	*field = (int)n;
	return 0;
}

/* Seconds: non-negative, or -1 where that is the key's default (unset). */
static int set_seconds(const cfg_key *k, double *field, const char *v, char *err, size_t errlen)
{
	char *end;
	double d;
	int unset_ok = strcmp(v, "-1") == 0 && k->def && strcmp(k->def, "-1") == 0;
	errno = 0;
	d = strtod(v, &end);
	if (errno || end == v || *end || !isfinite(d) || d > CFG_SECONDS_MAX || (d < 0 && !unset_ok)) {
		snprintf(err, errlen, "%s must be a non-negative number of seconds, not \"%s\"", k->name, v);
		return -1;
	}
	*field = d;
	return 0;
}

static int set_bytes(const cfg_key *k, long long *field, const char *v, char *err, size_t errlen)
{
	static const struct { const char *unit; long long mult; } units[] = {
		{"", 1}, {"B", 1}, {"kB", 1024}, {"KB", 1024}, {"MB", 1024 * 1024}, {"GB", 1024LL * 1024 * 1024}};
	char *end;
	long long n;
	errno = 0;
	n = strtoll(v, &end, 10);
	if (!errno && end != v && n >= 0) {
		while (*end == ' ')
			end++;
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (strcmp(end, units[i].unit) == 0 && n <= LLONG_MAX / units[i].mult) {
				*field = n * units[i].mult;
				return 0;
			}
	}
	snprintf(err, errlen, "%s must be a size like 64MB, not \"%s\"", k->name, v);
	return -1;
}

/* One of two words (or of the words of a bool): *field gets 1 for yes. */
static int set_choice(const cfg_key *k, int *field, const char *v, const char *const *yes,
                      const char *const *no, const char *expected, char *err, size_t errlen)
{
	for (int i = 0; yes[i]; i++)
		if (strcmp(v, yes[i]) == 0) {
			*field = 1;
			return 0;
		}
	for (int i = 0; no[i]; i++)
		if (strcmp(v, no[i]) == 0) {
			*field = 0;
			return 0;
		}
	snprintf(err, errlen, "%s must be %s, not \"%s\"", k->name, expected, v);
	return -1;
}

int config_set_value(config *cfg, const cfg_key *k, const char *v, char *err, size_t errlen)
{
	static const char *const yes[] = {"true", "yes", "on", NULL}, *const no[] = {"false", "no", "off", NULL};
	static const char *const event[] = {"event", NULL}, *const batch[] = {"batch", NULL};
	void *field = (char *)cfg + k->offset;
	int lvl;

	switch (k->type) {
	case CFG_STR:
	case CFG_PATH:
		return set_string(cfg, k, v, err, errlen);
	case CFG_INT:
		return set_int(k, field, v, err, errlen);
	case CFG_SECONDS:
		return set_seconds(k, field, v, err, errlen);
	case CFG_BYTES:
		return set_bytes(k, field, v, err, errlen);
	case CFG_LUA_PATH:
		return set_lua_path(cfg, k, v, err, errlen);
	case CFG_NAMES:
		return add_names(cfg, k, v, err, errlen);
	case CFG_REMOTE_MODE:
		return set_choice(k, field, v, event, batch, "batch or event", err, errlen);
	case CFG_BOOL:
		return set_choice(k, field, v, yes, no, "true or false", err, errlen);
	case CFG_LEVEL:
		if ((lvl = log_level_parse(v)) < 0) {
			snprintf(err, errlen, "%s must be error, warn, info, debug or trace, not \"%s\"", k->name, v);
			return -1;
		}
		*(int *)field = lvl;
		return 0;
	}
	return -1;
}

/* A required string that expanded to "" (a path then ends in '/'). */
int config_value_empty(const config *cfg, const cfg_key *k)
{
	const char *v;
	size_t n;
	if (k->type != CFG_STR && k->type != CFG_PATH)
		return 0;
	v = *(char *const *)((const char *)cfg + k->offset);
	n = v ? strlen(v) : 0;
	return n == 0 || (k->type == CFG_PATH && v[n - 1] == '/');
}

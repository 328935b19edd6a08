/*
 * config_int.h - the config's key table types, shared by config.c (the
 * table, parsing, defaults) and config_value.c (the values' syntax).
 * Nothing else includes it.
 */
#ifndef PGQLUA_CONFIG_INT_H
#define PGQLUA_CONFIG_INT_H

#include "config.h"
#include <stddef.h>

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

/* "a string", "seconds", ... for messages and the sample config. */
const char *config_type_name(cfg_type t);
/* Parse v as key k's value into cfg; 0, or -1 with err (which names the
 * key and quotes v: the caller passes the text written in the file). */
int config_set_value(config *cfg, const cfg_key *k, const char *v, char *err, size_t errlen);
/* A required string that expanded to "" (a path then ends in '/'). */
int config_value_empty(const config *cfg, const cfg_key *k);

#endif

/*
 * config.h - one consumer's YAML config, parsed with libyaml from a typed
 * key table that also drives --sample-config and the docs check.
 * Called by the consumer at open and on reload, and by the CLI.
 */
#ifndef PGQLUA_CONFIG_H
#define PGQLUA_CONFIG_H

#include <stdio.h>

/* partitions: at most this many (each is a PgQ consumer and a lock) */
#define CONFIG_PARTITIONS_MAX 1024
/* workers: at most this many processes under one parent */
#define CONFIG_WORKERS_MAX 256

typedef struct config {
	char *path;              /* the config file as given */
	char *dir;               /* its folder: relative paths start here */

	char *queue_name;
	char *consumer_name;
	char *db;                /* libpq conninfo or URI: may hold a password */
	char *target_db;         /* remote consumer: where the script's db goes; NULL: local */
	char *timezone;          /* every connection's TimeZone; ev.time is shown in it */
	int remote_event_mode;   /* remote_mode: 0 batch, 1 event */
	char *event_filter;      /* SQL boolean over the event's columns; NULL: every event */
	double tcp_keepalive;    /* the server's tcp_keepalives_idle for our sessions; 0: its own */
	int workers;             /* worker processes under the supervising parent */
	int partitions;          /* a group of this many partitions; 0: ungrouped */
	char *partition_key;     /* SQL over the event's columns; NULL: the default (group.c) */
	char *script;            /* resolved against dir */
	char *pidfile;
	char *logfile;
	int log_level;
	int log_syslog;          /* log to syslog instead of stderr/logfile */
	double shutdown_timeout; /* seconds `pgqlua stop` waits */

	double loop_delay;
	int wakeup;              /* LISTEN for ticks instead of only sleeping loop_delay */
	int prepared_statements; /* keep statements prepared per connection */
	double retry_delay;
	int max_retries;
	int fetch_size;
	int batch_min_count;     /* <= 0: not set */
	double batch_min_interval; /* < 0: not set */
	double batch_min_lag;    /* < 0: not set */
	double stats_period;
	double event_timeout;    /* seconds of Lua per event; 0: none */
	long long lua_memory_limit; /* bytes; 0: none */
	double kill_grace;       /* seconds past a deadline or a kill request before SIGKILL */
	int max_crashes;         /* deaths of the worker in one event before it fails */
	char *lua_path;          /* extra require templates ("a/?.lua;b/?.lua"), resolved; NULL: none */
	char *env_allow;         /* variables os.getenv may read, comma-separated; NULL: none */
	char *lua_modules;       /* C modules require may load, comma-separated; NULL: none */
	char *metrics_listen;    /* HOST:PORT for GET /metrics; NULL: off */
	char *metrics_file;      /* Prometheus textfile, resolved; NULL: off */
	double http_timeout;     /* pgq.http: seconds per request unless the request says */
	int http_concurrency;    /* pgq.http.send: requests in flight at most */
	long long http_max_body; /* pgq.http: largest response body, bytes */
	char *http_ca_file;      /* pgq.http: more trusted CAs (PEM); NULL: the system's only */
	int http_idempotency_key; /* pgq.http: add Idempotency-Key to an event's requests */
	char *smtp_url;          /* pgq.mail.send: the SMTP server; NULL: none */
	char *smtp_user;         /* pgq.mail.send: login, over the URL's; NULL: the URL's */
	char *smtp_password;     /* pgq.mail.send: its password; NULL: the URL's */
} config;

typedef enum config_status {
	CONFIG_OK = 0,
	CONFIG_ERR_NOFILE,       /* cannot read the file */
	CONFIG_ERR_INVALID,      /* syntax, unknown key, type, missing key */
	CONFIG_ERR_NOMEM
} config_status;

/* Load and validate a file.  On error *out is NULL and err has one line
 * starting with "FILE:LINE:COLUMN: " where there is a position. */
config_status config_load(const char *path, config **out, char *err, size_t errlen);

/* Same, from a string (name is used in messages); for tests and embedding. */
config_status config_parse_string(const char *text, const char *name,
                                  config **out, char *err, size_t errlen);

void config_free(config *cfg);

/* Names of settings that differ and cannot change without a restart,
 * comma-separated into buf ("" when none). */
void config_diff_restart_only(const config *a, const config *b, char *buf, size_t len);

/* Give next the running values of the settings that need a restart
 * (queue_name, consumer_name, db, pidfile).  0, or -1 when out of memory. */
int config_keep_restart_only(const config *running, config *next);

/* Print every key with its type, default and help as a commented YAML file. */
void config_print_sample(FILE *out);

/* Iterate over key names (for the docs check); NULL past the end. */
const char *config_key_name(int i);

/* Expand ${VAR} and ${VAR:-default} in s.  Returns a malloc'd string, or
 * NULL with err set ("unset variable", "unterminated"). */
char *config_expand_env(const char *s, char *err, size_t errlen);

#endif

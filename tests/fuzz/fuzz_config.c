/*
 * fuzz_config.c - libFuzzer target for the YAML config parser: any bytes
 * given to config_parse_string and config_expand_env must give a config or
 * a one-line error, never a crash, a leak or undefined behaviour.  On
 * success the config's invariants are checked too.
 *
 * Built by tests/CMakeLists.txt with -DPGQLUA_FUZZ=ON and clang
 * (-fsanitize=fuzzer,address,undefined); see tests/fuzz/README.md.
 */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                              \
	do {                                                                         \
		if (!(cond)) {                                                           \
			fprintf(stderr, "fuzz_config: check failed: %s (line %d)\n", #cond, \
			        __LINE__);                                                   \
			abort();                                                             \
		}                                                                        \
	} while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* variables the dictionary names, so ${...} expands both ways */
	setenv("PGQLUA_FUZZ_A", "orders", 1);
	setenv("PGQLUA_FUZZ_EMPTY", "", 1);
	setenv("PGQLUA_FUZZ_NUM", "42", 1);
	unsetenv("PGQLUA_FUZZ_UNSET");
	return 0;
}

/* An error message is non-empty and fits the buffer; config_parse_string's
 * is one line (config.h). */
static void check_err(const char *err, size_t cap, int one_line)
{
	size_t n = strnlen(err, cap);
	CHECK(n > 0 && n < cap);
	if (one_line)
		CHECK(strpbrk(err, "\r\n") == NULL);
}

static void check_config(const config *cfg)
{
	char diff[256];

	CHECK(cfg->path && cfg->dir);
	CHECK(cfg->queue_name && *cfg->queue_name);
	CHECK(cfg->consumer_name && *cfg->consumer_name);
	CHECK(cfg->db && *cfg->db);
	CHECK(cfg->script && *cfg->script);
	CHECK(cfg->remote_event_mode == 0 || cfg->remote_event_mode == 1);
	CHECK(cfg->log_syslog == 0 || cfg->log_syslog == 1);
	CHECK(cfg->max_retries >= 0 && cfg->fetch_size >= 1 && cfg->batch_min_count >= 0);
	CHECK(cfg->lua_memory_limit >= 0);
	CHECK(isfinite(cfg->loop_delay) && cfg->loop_delay >= 0);
	CHECK(isfinite(cfg->retry_delay) && cfg->retry_delay >= 0);
	CHECK(isfinite(cfg->stats_period) && cfg->stats_period >= 0);
	CHECK(isfinite(cfg->event_timeout) && cfg->event_timeout >= 0);
	CHECK(isfinite(cfg->shutdown_timeout) && cfg->shutdown_timeout >= 0);
	CHECK(cfg->batch_min_interval >= 0 || cfg->batch_min_interval == -1);
	CHECK(cfg->batch_min_lag >= 0 || cfg->batch_min_lag == -1);
	config_diff_restart_only(cfg, cfg, diff, sizeof(diff));
	CHECK(diff[0] == '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	char err[512];
	config *cfg = NULL, *again = NULL;
	char *x;
	config_status st;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';   /* the parser takes a C string: bytes after a NUL are ignored */

	err[0] = '\0';
	st = config_parse_string(text, "fuzz.yaml", &cfg, err, sizeof(err));
	if (st == CONFIG_OK) {
		CHECK(cfg != NULL);
		check_config(cfg);
		/* a reload of the same text keeps the same restart-only values */
		CHECK(config_parse_string(text, "fuzz.yaml", &again, err, sizeof(err)) == CONFIG_OK);
		CHECK(config_keep_restart_only(cfg, again) == 0);
		check_config(again);
		config_free(again);
	} else {
		CHECK(st == CONFIG_ERR_INVALID || st == CONFIG_ERR_NOMEM);
		CHECK(cfg == NULL);
		check_err(err, sizeof(err), 1);
		CHECK(strncmp(err, "fuzz.yaml:", 10) == 0 || st == CONFIG_ERR_NOMEM);
	}
	config_free(cfg);

	err[0] = '\0';
	x = config_expand_env(text, err, sizeof(err));
	if (x) {
		if (!strchr(text, '$'))
			CHECK(strcmp(x, text) == 0);
		free(x);
	} else {
		check_err(err, sizeof(err), 0);
	}

	free(text);
	return 0;
}

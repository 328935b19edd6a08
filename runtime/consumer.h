/*
 * consumer.h - the batch loop behind the public pgqlua_* API (pgqlua.h):
 * owns the config, the connection, the script state and the counters, and
 * is the one place where a reloaded config and script are swapped in.
 */
#ifndef PGQLUA_CONSUMER_H
#define PGQLUA_CONSUMER_H

#include "pgqlua.h"
#include "config.h"

/* The consumer's config (for the CLI's register/failed commands). */
const config *consumer_config(const pgqlua_consumer *c);

/* Open a consumer from an already parsed config, taking ownership of it. */
pgqlua_status consumer_open_config(config *cfg, pgqlua_consumer **out, char *err, size_t errlen);

#endif

/*
 * cli.h - the pgqlua program's command table: `pgqlua COMMAND CONFIG [args]`.
 * main.c calls cli_main and exits with what it returns.
 */
#ifndef PGQLUA_CLI_H
#define PGQLUA_CLI_H

#include "exitcode.h"


int cli_main(int argc, char **argv);


#endif

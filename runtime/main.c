/*
 * main.c - the pgqlua program: a thin main over libpgqlua's command table.
 * The only place that exits.
 */
#include "cli.h"

#include <stdlib.h>

int main(int argc, char **argv)
{
	exit(cli_main(argc, argv));
}

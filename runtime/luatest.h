/*
 * luatest.h - `pgqlua test`: runs the mock batch runner (lua/pgqlua/
 * testing.lua, driven by lua/pgqlua/cli_test.lua) in a plain Lua state.
 * Called by cli.c.
 */
#ifndef PGQLUA_LUATEST_H
#define PGQLUA_LUATEST_H

/* argv are the arguments after "test"; returns the exit code. */
int luatest_main(int argc, char **argv);

#endif

/*
 * clock.h - the monotonic clock every deadline and period of the runtime
 * is measured on (seconds as a double).
 */
#ifndef PGQLUA_CLOCK_H
#define PGQLUA_CLOCK_H

#include <time.h>

static inline double clock_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif

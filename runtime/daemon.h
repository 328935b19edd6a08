/*
 * daemon.h - process-level plumbing for the pgqlua program: signal handlers
 * that only forward to the consumer's async-safe requests, the locked pid
 * file, daemonizing, and the systemd notification protocol.  Called by
 * service.c and cli.c.
 */
#ifndef PGQLUA_DAEMON_H
#define PGQLUA_DAEMON_H

#include "pgqlua.h"
#include <stddef.h>
#include <sys/types.h>

/* SIGTERM/SIGINT: stop after the batch (a second one: at once); SIGQUIT: at
 * once; SIGHUP: reload; SIGUSR1/SIGUSR2: log level up/down. */
void daemon_install_signals(pgqlua_consumer *c);
void daemon_reset_signals(void);
/* Non-zero once since the last call if SIGUSR1/2 changed the log level. */
int daemon_take_level_change(void);

typedef enum daemon_lock {
	DAEMON_LOCKED = 0,   /* the pid file is ours */
	DAEMON_RUNNING,      /* another live process holds it; *other is its pid */
	DAEMON_LOCK_ERROR
} daemon_lock;

/* Lock the pid file (creating it with mode 0644; a stale one from a dead
 * process is taken over).  Refused, and left untouched: a symbolic link,
 * anything but a regular file with one link, a file of another user, and a
 * file that does not hold one line with a pid.  On DAEMON_LOCKED *fd holds
 * the lock until exit. */
daemon_lock daemon_pidfile_lock(const char *path, int *fd, pid_t *other, char *err, size_t errlen);
/* Write our pid into the locked file (after the last fork). */
int daemon_pidfile_write(int fd, char *err, size_t errlen);
/* Unlink the pid file if path is still the file fd holds, and close fd. */
void daemon_pidfile_remove(const char *path, int fd);
/* Is a live process holding the pid file?  1 yes (*pid set), 0 no. */
int daemon_pidfile_running(const char *path, pid_t *pid);

/* Replace the file at path by one holding text, through path.tmp created
 * with O_EXCL|O_NOFOLLOW and renamed (a link there is never followed).
 * 0 or -1. */
int daemon_state_write(const char *path, const char *text);

/* In a child of the original process: setsid, fork again, stdio to
 * /dev/null.  Returns 0 in the daemon only (the middle process exits). */
int daemon_detach(char *err, size_t errlen);

/* sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET.  A no-op
 * when the variable is unset. */
void daemon_notify(const char *state);
/* WATCHDOG=1 when $WATCHDOG_USEC is set and half of it has passed. */
void daemon_watchdog(void);

#endif

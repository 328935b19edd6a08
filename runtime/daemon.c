/*
 * daemon.c - signals, the locked pid file, daemonizing and sd_notify (see
 * daemon.h).  Signal handlers only call the consumer's async-signal-safe
 * requests or change the log level.
 */
#define _GNU_SOURCE     /* F_OFD_SETLK, F_OFD_GETLK */
#include "daemon.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static pgqlua_consumer *signal_consumer;
static volatile sig_atomic_t level_changed;

static void on_stop(int sig)
{
	(void)sig;
	if (signal_consumer)
		pgqlua_request_stop(signal_consumer);
}

static void on_quit(int sig)
{
	(void)sig;
	if (signal_consumer) {
		pgqlua_request_stop(signal_consumer);
		pgqlua_request_stop(signal_consumer);
	}
}

static void on_reload(int sig)
{
	(void)sig;
	if (signal_consumer)
		pgqlua_request_reload(signal_consumer);
}

static void on_level(int sig)
{
	log_level_step(sig == SIGUSR1 ? 1 : -1);
	level_changed = 1;
}

int daemon_take_level_change(void)
{
	int v = level_changed;
	level_changed = 0;
	return v;
}

void daemon_install_signals(pgqlua_consumer *c)
{
	struct sigaction sa;
	signal_consumer = c;
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sa.sa_handler = on_stop;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_quit;
	sigaction(SIGQUIT, &sa, NULL);
	sa.sa_handler = on_reload;
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_handler = on_level;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
}

void daemon_reset_signals(void)
{
	int sigs[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2};
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		signal(sigs[i], SIG_DFL);
	signal_consumer = NULL;
}

static pid_t read_pid(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return (pid_t)atol(buf);
}

/* Is the open file f one a pgqlua may take over: a regular file of the
 * running user with one link, empty or one line holding a pid?  0, or -1
 * with err.  Nothing is changed. */
static int pidfile_check(int f, const char *path, char *err, size_t errlen)
{
	struct stat st;
	char buf[32];
	ssize_t n;
	size_t digits = 0;

	if (fstat(f, &st) != 0) {
		snprintf(err, errlen, "%s: cannot read pid file: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode) || st.st_nlink != 1) {
		snprintf(err, errlen, "%s: not a pgqlua pid file (%s): refused, left as it is", path,
		         S_ISREG(st.st_mode) ? "it has other hard links" : "not a regular file");
		return -1;
	}
	if (st.st_uid != geteuid()) {
		snprintf(err, errlen, "%s: pid file belongs to uid %u, not to the running user (uid %u): refused, left as it is",
		         path, (unsigned)st.st_uid, (unsigned)geteuid());
		return -1;
	}
	n = st.st_size < (off_t)sizeof(buf) ? pread(f, buf, sizeof(buf), 0) : -1;
	while (n > 0 && digits < (size_t)n && buf[digits] >= '0' && buf[digits] <= '9')
		digits++;
	if (n < 0 || (n > 0 && (digits == 0 || !((size_t)n == digits || ((size_t)n == digits + 1 && buf[digits] == '\n'))))) {
		snprintf(err, errlen, "%s: not a pgqlua pid file (it should hold one line with a pid): refused, left as it is",
		         path);
		return -1;
	}
	return 0;
}

/*
 * The pid file's lock is an open-file-description record lock: like
 * flock() it belongs to the open file, so a forked worker shares it and
 * it lasts until the last process holding it is gone; unlike flock() it
 * can be tested without being taken (F_OFD_GETLK).  For F_OFD_GETLK the
 * result is 1 when another open file holds a conflicting lock, else 0.
 */
static int pidfile_lock_op(int f, int cmd, short type)
{
	struct flock fl;
	memset(&fl, 0, sizeof(fl));
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	if (fcntl(f, cmd, &fl) != 0)
		return -1;
	return cmd == F_OFD_GETLK ? fl.l_type != F_UNLCK : 0;
}

daemon_lock daemon_pidfile_lock(const char *path, int *fd, pid_t *other, char *err, size_t errlen)
{
	/* never through a symbolic link, never a FIFO's open that blocks */
	const int flags = O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
	int f = open(path, flags | O_CREAT | O_EXCL, 0644), created = f >= 0;

	*fd = -1;
	*other = 0;
	if (f < 0 && errno == EEXIST)
		f = open(path, flags);
	if (f < 0) {
		if (errno == ELOOP)
			snprintf(err, errlen, "%s: pid file is a symbolic link: refused, left as it is", path);
		else
			snprintf(err, errlen, "%s: cannot open pid file: %s", path, strerror(errno));
		return DAEMON_LOCK_ERROR;
	}
	if (created ? fchmod(f, 0644) != 0 : pidfile_check(f, path, err, errlen) != 0) {
		if (created) {
			snprintf(err, errlen, "%s: cannot set the pid file's mode: %s", path, strerror(errno));
			unlink(path);
		}
		close(f);
		return DAEMON_LOCK_ERROR;
	}
	if (pidfile_lock_op(f, F_OFD_SETLK, F_WRLCK) != 0) {
		if (errno == EAGAIN || errno == EACCES) {
			*other = read_pid(f);
			close(f);
			return DAEMON_RUNNING;
		}
		snprintf(err, errlen, "%s: cannot lock pid file: %s", path, strerror(errno));
		close(f);
		return DAEMON_LOCK_ERROR;
	}
	*fd = f;
	return DAEMON_LOCKED;
}

int daemon_pidfile_write(int fd, char *err, size_t errlen)
{
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	/* one small write after truncating: readers see all of it or nothing */
	if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n) {
		snprintf(err, errlen, "cannot write pid file: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Does path still name the file open as fd (not a replacement)? */
static int same_file(const char *path, int fd)
{
	struct stat a, b;
	return lstat(path, &a) == 0 && fstat(fd, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

void daemon_pidfile_remove(const char *path, int fd)
{
	if (fd < 0)
		return;
	if (same_file(path, fd))
		unlink(path);   /* while still locked: no one else can own it yet */
	close(fd);
}

int daemon_pidfile_running(const char *path, pid_t *pid)
{
	int f = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	int running = 0;
	*pid = 0;
	if (f < 0)
		return 0;
	/* only asks: a probe that took the lock, even for a moment, could
	 * make a starting instance believe another one runs */
	if (pidfile_lock_op(f, F_OFD_GETLK, F_RDLCK) == 1) {
		running = 1;
		*pid = read_pid(f);
	}
	close(f);
	return running;
}

int daemon_state_write(const char *path, const char *text)
{
	char tmp[4200];
	size_t len = strlen(text);
	int f, rc = -1;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
		return -1;
	f = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0644);
	if (f < 0 && errno == EEXIST) {
		/* left by a crash (or planted): unlink removes a link, not its target */
		unlink(tmp);
		f = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0644);
	}
	if (f < 0)
		return -1;
	if (fchmod(f, 0644) == 0 && write(f, text, len) == (ssize_t)len && close(f) == 0) {
		f = -1;
		rc = rename(tmp, path);
	}
	if (f >= 0)
		close(f);
	if (rc != 0)
		unlink(tmp);
	return rc;
}

int daemon_detach(char *err, size_t errlen)
{
	pid_t pid;
	int null;

	if (setsid() < 0)
		goto fail;
	pid = fork();
	if (pid < 0)
		goto fail;
	if (pid > 0)
		_exit(0);
	umask(022);
	null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		if (null > 2)
			close(null);
	}
	return 0;
fail:
	snprintf(err, errlen, "cannot daemonize: %s", strerror(errno));
	return -1;
}

void daemon_notify(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa;
	size_t len;
	int fd;

	if (!path || !*path || (path[0] != '/' && path[0] != '@'))
		return;
	len = strlen(path);
	if (len >= sizeof(sa.sun_path))
		return;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, len);
	if (path[0] == '@')
		sa.sun_path[0] = '\0';   /* abstract namespace */
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	(void)sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa,
	             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
	close(fd);
}

void daemon_watchdog(void)
{
	static double last;
	const char *usec = getenv("WATCHDOG_USEC");
	struct timespec ts;
	double now, period;

	if (!usec || (period = atof(usec) / 1e6) <= 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	if (now - last >= period / 2) {
		daemon_notify("WATCHDOG=1");
		last = now;
	}
}

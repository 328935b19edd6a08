/*
 * test_ldbwin.c - unit test of runtime/ldbwin.c (the savepoint window, the
 * send log and its replay, the failure queue) against fake_pgconn.c, no
 * server.  Data-driven: each case is a line of steps, and the commands
 * sent, the writes left in effect, each step's outcome and the failures
 * queued are compared with the case's.  TAP-style output, a final
 * "N passed, M failed" line, exit status 1 on any failure.
 */
#include "fake_pgconn.h"
#include "ldbwin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int n_pass, n_fail;

static void check_str(const char *name, const char *what, const char *got, const char *want)
{
	int ok = strcmp(got, want) == 0;
	if (ok)
		n_pass++;
	else
		n_fail++;
	printf("%s %d - %s: %s\n", ok ? "ok" : "not ok", n_pass + n_fail, name, what);
	if (!ok)
		printf("#   got:  \"%s\"\n#   want: \"%s\"\n", got, want);
}

static void append(char *buf, size_t len, const char *word)
{
	size_t n = strlen(buf);
	snprintf(buf + n, len - n, "%s%s", n ? " " : "", word);
}

static const char *status_word(ldbwin_status s)
{
	switch (s) {
	case LDBWIN_OK:
		return "ok";
	case LDBWIN_EVENT_FAILED:
		return "failed";
	case LDBWIN_NO_MEMORY:
		return "nomem";
	case LDBWIN_UNUSABLE:
		return "unusable";
	}
	return "?";
}

/* A db:exec as ldb.c runs it: the sends first, the window's commands and
 * the statement in one round trip, the event marked failed if it fails. */
static const char *do_exec(ldb_state *st, pgconn *c, const char *sql, char *err, size_t errlen)
{
	const char *pre[2];
	int npre, failed_at;
	ldbwin_status s = ldbwin_wait_sends(st, err, errlen);
	if (s != LDBWIN_OK)
		return status_word(s);
	npre = ldbwin_exec_begin(st, pre);
	failed_at = fake_pgconn_exec(c, pre, npre, sql, err, errlen);
	ldbwin_exec_end(st, npre, failed_at);
	if (failed_at < 0)
		return "ok";
	ldbwin_fail_event(st, LDB_ERR_EXEC, err);
	if (failed_at < npre) {
		ldbwin_break(st);
		return "broken";
	}
	return "error";
}

/* A db:send as ldb.c runs it. */
static ldbwin_status do_send(ldb_state *st, const char *sql, char *err, size_t errlen)
{
	ldbwin_status s = ldbwin_send_record(st, sql, 0, NULL, err, errlen);
	if (s == LDBWIN_OK)
		s = ldbwin_send_queue(st, sql, 0, NULL, err, errlen);
	return s;
}

/* One step: "begin N", "hook", "send SQL", "exec SQL", "wait",
 * "end ok", "end fail", "end ok close", "close", "commit", "fail SQL"
 * (the fake fails SQL's next run), "prepare", "lose".  Its outcome, if it
 * has one, goes to out; its error, if any, to err. */
static void step(ldb_state *st, pgconn *c, const char *s, char *out, size_t outlen, char *err,
                 size_t errlen)
{
	char word[32];
	int rc = 0, has_rc = 1;
	err[0] = '\0';
	if (strncmp(s, "begin ", 6) == 0) {
		ldb_event_begin(st, atoi(s + 6));
		return;
	} else if (strcmp(s, "hook") == 0) {
		ldb_event_begin(st, LDB_HOOK);
		return;
	} else if (strncmp(s, "send ", 5) == 0) {
		append(out, outlen, status_word(do_send(st, s + 5, err, errlen)));
		return;
	} else if (strncmp(s, "exec ", 5) == 0) {
		append(out, outlen, do_exec(st, c, s + 5, err, errlen));
		return;
	} else if (strcmp(s, "wait") == 0) {
		append(out, outlen, status_word(ldbwin_wait_sends(st, err, errlen)));
		return;
	} else if (strncmp(s, "end ", 4) == 0) {
		rc = ldb_event_end(st, strncmp(s + 4, "ok", 2) == 0, strstr(s, "close") != NULL, err,
		                   errlen);
	} else if (strcmp(s, "close") == 0) {
		rc = ldb_close(st, err, errlen);
	} else if (strcmp(s, "commit") == 0) {
		fake_pgconn_commit(c);
		ldb_after_commit(st);
		has_rc = 0;
	} else if (strncmp(s, "fail ", 5) == 0) {
		fake_pgconn_fail(c, s + 5);
		has_rc = 0;
	} else if (strcmp(s, "prepare") == 0) {
		fake_pgconn_prepare(c, 1);
		has_rc = 0;
	} else if (strcmp(s, "lose") == 0) {
		fake_pgconn_lose(c);
		has_rc = 0;
	} else {
		fprintf(stderr, "test_ldbwin: unknown step \"%s\"\n", s);
		exit(2);
	}
	if (has_rc) {
		snprintf(word, sizeof(word), "%d", rc);
		append(out, outlen, word);
	}
}

typedef struct ldbwin_case {
	const char *name;
	const char *steps;     /* separated by "; " */
	const char *sent;      /* the commands, SYNC where results were read */
	const char *applied;   /* the writes in effect at the end */
	const char *outcomes;  /* of send, exec, wait, end and close, in order */
	const char *error;     /* the error of the last step that gave one */
	const char *failures;  /* ldb_take_failure's, "row: message", then "" */
} ldbwin_case;

#define DUP "23505 duplicate key value violates unique constraint \"t_pkey\""

static const ldbwin_case cases[] = {
	{"sends of OK events stay in the window, no sync until needed",
	 "begin 1; send a1; end ok; begin 2; send a2; end ok",
	 "SAVEPOINT a1 a2", "", "ok 0 ok 0", "", ""},
	{"the window's sends are read when the runtime closes it",
	 "begin 1; send a1; end ok; begin 2; send a2; end ok; close",
	 "SAVEPOINT a1 a2 SYNC", "a1,a2", "ok 0 ok 0 0", "", ""},
	{"a failed send of the running event undoes only that event",
	 "fail b2; begin 1; send a1; end ok; begin 2; send b1; send b2; wait; end ok; "
	 "begin 3; send c1; end ok; close",
	 "SAVEPOINT a1 b1 b2 SYNC ROLLBACK_TO a1 SYNC RELEASE SAVEPOINT c1 SYNC", "a1,c1",
	 "ok 0 ok ok failed 1 ok 0 0", "db:send: " DUP, ""},
	{"a later send of a failed event is refused by its status",
	 "fail b1; begin 1; send b1; wait; wait",
	 "SAVEPOINT b1 SYNC ROLLBACK_TO", "", "ok failed failed", "", ""},
	{"a failed send of an ended event is queued, the others replayed",
	 "fail a2; begin 1; send a1; end ok; begin 2; send a2; end ok; begin 3; send a3; end ok; close",
	 "SAVEPOINT a1 a2 a3 SYNC ROLLBACK_TO a1 a3 SYNC", "a1,a3", "ok 0 ok 0 ok 0 0", "",
	 "2: db:send: " DUP},
	{"an ended event's failure found by a later event's wait is queued",
	 "fail a1; begin 1; send a1; end ok; begin 2; send b1; wait; end ok; close",
	 "SAVEPOINT a1 b1 SYNC ROLLBACK_TO b1 SYNC", "b1", "ok 0 ok ok 0 0", "",
	 "1: db:send: " DUP},
	{"two failed events are both queued, in order",
	 "fail a1; fail a3; begin 1; send a1; end ok; begin 2; send a2; end ok; begin 3; send a3; "
	 "end ok; close",
	 "SAVEPOINT a1 a2 a3 SYNC ROLLBACK_TO a2 a3 SYNC ROLLBACK_TO a2 SYNC", "a2",
	 "ok 0 ok 0 ok 0 0", "", "1: db:send: " DUP " / 3: db:send: " DUP},
	{"the pipeline's Parse commands do not shift which event failed",
	 "prepare; fail a2; begin 1; send a1; end ok; begin 2; send a2; end ok; begin 3; send a3; "
	 "end ok; close",
	 "SAVEPOINT a1 a2 a3 SYNC ROLLBACK_TO a1 a3 SYNC", "a1,a3", "ok 0 ok 0 ok 0 0", "",
	 "2: db:send: " DUP},
	{"an event that used db:exec closes the window at its end",
	 "begin 1; send a1; end ok; begin 2; exec x2; end ok; begin 3; send a3; end ok; close",
	 "SAVEPOINT a1 SYNC x2 SYNC RELEASE SAVEPOINT a3 SYNC", "a1,x2,a3", "ok 0 ok 0 ok 0 0", "",
	 ""},
	{"a db:exec opens a new window in its own round trip",
	 "begin 1; exec x1; end ok; begin 2; exec x2; end ok",
	 "SAVEPOINT x1 SYNC RELEASE SAVEPOINT x2 SYNC", "x1,x2", "ok 0 ok 0", "", ""},
	{"an event that does not end OK has its sends undone",
	 "begin 1; send a1; end ok; begin 2; send b1; send b2; end fail; begin 3; send c1; end ok; "
	 "close",
	 "SAVEPOINT a1 b1 b2 SYNC ROLLBACK_TO a1 SYNC RELEASE SAVEPOINT c1 SYNC", "a1,c1",
	 "ok 0 ok ok 0 ok 0 0", "", ""},
	{"an event whose db:exec failed has its writes undone",
	 "begin 1; send a1; end ok; begin 2; send b1; fail x2; exec x2; end fail; close",
	 "SAVEPOINT a1 b1 SYNC x2 SYNC ROLLBACK_TO a1 SYNC", "a1", "ok 0 ok error 0 0", DUP, ""},
	{"an event that ends OK after its db:exec failed is an error, undone",
	 "begin 1; send a1; end ok; begin 2; fail x2; exec x2; end ok",
	 "SAVEPOINT a1 SYNC x2 SYNC ROLLBACK_TO a1 SYNC", "a1", "ok 0 error 1", DUP, ""},
	{"an event without statements leaves the window alone",
	 "begin 1; send a1; end ok; begin 2; end fail; close",
	 "SAVEPOINT a1 SYNC", "a1", "ok 0 0 0", "", ""},
	{"a failed savepoint makes the transaction unusable",
	 "fail SAVEPOINT; begin 1; send a1; end ok; close",
	 "SAVEPOINT a1 SYNC", "", "ok 0 -1", "cannot take a savepoint: " DUP, ""},
	{"a failed savepoint before a db:exec breaks the batch",
	 "fail SAVEPOINT; begin 1; exec x1; end ok; close",
	 "SAVEPOINT x1 SYNC", "", "broken -1 -1", DUP, ""},
	{"a hook's statements close the window at its end",
	 "hook; send h1; end ok close; begin 1; send a1; end ok; close",
	 "SAVEPOINT h1 SYNC RELEASE SAVEPOINT a1 SYNC", "h1,a1", "ok 0 ok 0 0", "", ""},
	{"ldb_after_commit forgets the window and its savepoint",
	 "begin 1; send a1; end ok; close; commit; begin 2; send a2; end ok; close",
	 "SAVEPOINT a1 SYNC COMMIT SAVEPOINT a2 SYNC", "a1,a2", "ok 0 0 ok 0 0", "", ""},
	{"a send that ends the transaction makes it unusable",
	 "begin 1; send commit; end ok; close",
	 "SAVEPOINT commit SYNC CLOSE", "", "ok 0 -1",
	 "db:send: transaction control (COMMIT, ROLLBACK, ...) is not allowed: the runtime owns the "
	 "batch's transaction",
	 ""},
	{"a lost connection refuses the send and marks the event",
	 "begin 1; send a1; lose; send a2; end ok",
	 "SAVEPOINT a1", "", "ok unusable -1", "server closed the connection unexpectedly", ""},
};

static void split_steps(const char *steps, char (*out)[64], int *n)
{
	const char *p = steps;
	*n = 0;
	while (*p) {
		const char *e = strstr(p, "; ");
		size_t len = e ? (size_t)(e - p) : strlen(p);
		snprintf(out[(*n)++], 64, "%.*s", (int)len, p);
		p += len + (e ? 2 : 0);
	}
}

static void run_case(const ldbwin_case *tc)
{
	char steps[64][64], outcomes[512] = "", err[1024], last_err[1024] = "", failures[2048] = "";
	char msg[1024], entry[1100];
	int nsteps, row;
	pgconn *c = fake_pgconn_new();
	ldb_state *st = ldb_new();

	ldb_batch_begin(st, c);
	split_steps(tc->steps, steps, &nsteps);
	for (int i = 0; i < nsteps; i++) {
		step(st, c, steps[i], outcomes, sizeof(outcomes), err, sizeof(err));
		if (err[0])
			snprintf(last_err, sizeof(last_err), "%s", err);
	}
	while (ldb_failures_pending(st) && ldb_take_failure(st, &row, msg, sizeof(msg))) {
		snprintf(entry, sizeof(entry), "%s%d: %s", failures[0] ? " / " : "", row, msg);
		strncat(failures, entry, sizeof(failures) - strlen(failures) - 1);
	}
	check_str(tc->name, "commands sent", fake_pgconn_sent(c), tc->sent);
	check_str(tc->name, "writes in effect", fake_pgconn_applied(c), tc->applied);
	check_str(tc->name, "outcomes", outcomes, tc->outcomes);
	check_str(tc->name, "error", last_err, tc->error);
	check_str(tc->name, "failures queued", failures, tc->failures);
	ldb_batch_end(st);
	ldb_free(st);
	pgconn_free(c);
}

static int count_words(const char *s, const char *w)
{
	int n = 0;
	size_t len = strlen(w);
	for (const char *p = s; (p = strstr(p, w)) != NULL; p += len)
		n++;
	return n;
}

/* The window closes at the end of the event that brings its log to
 * LDBWIN_WINDOW_MAX sends (the pipeline's own syncs do not close it), and
 * the next send opens a new one. */
static void test_window_max(void)
{
	char err[1024], name[32], got[128], want[128];
	pgconn *c = fake_pgconn_new();
	ldb_state *st = ldb_new();
	int bad = 0;

	ldb_batch_begin(st, c);
	for (int i = 0; i <= LDBWIN_WINDOW_MAX; i++) {
		snprintf(name, sizeof(name), "w%d", i);
		ldb_event_begin(st, i);
		bad |= do_send(st, name, err, sizeof(err)) != LDBWIN_OK;
		bad |= ldb_event_end(st, 1, 0, err, sizeof(err)) != 0;
	}
	bad |= ldb_close(st, err, sizeof(err)) != 0;
	snprintf(got, sizeof(got), "release %d, rollback %d, bad %d",
	         count_words(fake_pgconn_sent(c), "RELEASE"),
	         count_words(fake_pgconn_sent(c), "ROLLBACK_TO"), bad);
	check_str("window max", "one window closed, nothing undone", got,
	          "release 1, rollback 0, bad 0");
	snprintf(want, sizeof(want), "w%d SYNC RELEASE SAVEPOINT w%d SYNC", LDBWIN_WINDOW_MAX - 1,
	         LDBWIN_WINDOW_MAX);
	check_str("window max", "closed at the end of the event that filled it",
	          strstr(fake_pgconn_sent(c), want) ? want : fake_pgconn_sent(c) + strlen(fake_pgconn_sent(c)) - 60,
	          want);
	ldb_batch_end(st);
	ldb_free(st);
	pgconn_free(c);
}

/* Past LDBWIN_LOG_MAX logged sends an event is checked first, then sent
 * unlogged, and closes the window at its end. */
static void test_log_max(void)
{
	char err[1024], name[32], counts[160];
	pgconn *c = fake_pgconn_new();
	ldb_state *st = ldb_new();
	int bad = 0;

	ldb_batch_begin(st, c);
	ldb_event_begin(st, 1);
	for (int i = 0; i < LDBWIN_LOG_MAX + 2; i++) {
		snprintf(name, sizeof(name), "l%d", i);
		bad |= do_send(st, name, err, sizeof(err)) != LDBWIN_OK;
	}
	bad |= ldb_event_end(st, 1, 0, err, sizeof(err)) != 0;
	ldb_event_begin(st, 2);
	bad |= do_send(st, "after", err, sizeof(err)) != LDBWIN_OK;
	bad |= ldb_close(st, err, sizeof(err)) != 0;
	snprintf(counts, sizeof(counts), "release %d, bad %d, applied %d",
	         count_words(fake_pgconn_sent(c), "RELEASE"), bad,
	         count_words(fake_pgconn_applied(c), ",") + 1);
	check_str("log max", "an unlogged event closes the window", counts,
	          "release 1, bad 0, applied 10003");
	ldb_batch_end(st);
	ldb_free(st);
	pgconn_free(c);
}

/* Outside a batch the handle may not be used; ldb_event_error reports. */
static void test_boundaries(void)
{
	pgconn *c = fake_pgconn_new();
	ldb_state *st = ldb_new();
	const char *msg;
	ldb_error_source src;
	char got[128];

	snprintf(got, sizeof(got), "%d", ldbwin_in_batch(st));
	check_str("boundaries", "a new handle is outside a batch", got, "0");
	ldb_batch_begin(st, c);
	snprintf(got, sizeof(got), "%d %d", ldbwin_in_batch(st), ldbwin_conn(st) == c);
	check_str("boundaries", "inside a batch, on its connection", got, "1 1");
	ldb_event_begin(st, 7);
	ldbwin_fail_event(st, LDB_ERR_EXEC, "boom");
	src = ldb_event_error(st, &msg);
	snprintf(got, sizeof(got), "%d %s", (int)src, msg);
	check_str("boundaries", "a marked event reports its source and message", got, "1 boom");
	ldb_event_begin(st, 8);
	snprintf(got, sizeof(got), "%d", (int)ldb_event_error(st, NULL));
	check_str("boundaries", "the next event starts clean", got, "0");
	ldb_batch_end(st);
	snprintf(got, sizeof(got), "%d", ldbwin_in_batch(st));
	check_str("boundaries", "after the batch", got, "0");
	ldb_free(st);
	pgconn_free(c);
}

int main(void)
{
	ldbwin_set_refusal("transaction control (COMMIT, ROLLBACK, ...) is not allowed: the runtime owns the batch's transaction");
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		run_case(&cases[i]);
	test_window_max();
	test_log_max();
	test_boundaries();
	printf("%d passed, %d failed\n", n_pass, n_fail);
	return n_fail ? 1 : 0;
}

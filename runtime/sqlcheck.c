/*
 * sqlcheck.c - which statements a script may not send (see sqlcheck.h):
 * a small lexer for PostgreSQL's comments (nested), quoted strings and
 * identifiers, E'' strings and dollar quotes, enough to find where each
 * statement starts.  Called by ldb.c for db:exec and db:send.
 */
#include "sqlcheck.h"

#include <string.h>
#include <strings.h>

/* Skip blanks and comments; block comments nest, as in PostgreSQL. */
static const char *skip_blank(const char *p)
{
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v')
			p++;
		if (p[0] == '-' && p[1] == '-') {
			while (*p && *p != '\n')
				p++;
		} else if (p[0] == '/' && p[1] == '*') {
			int depth = 1;
			p += 2;
			while (*p && depth > 0) {
				if (p[0] == '/' && p[1] == '*') {
					depth++;
					p += 2;
				} else if (p[0] == '*' && p[1] == '/') {
					depth--;
					p += 2;
				} else
					p++;
			}
		} else
			return p;
	}
}

/* Does the word at p (letters only) equal w, ignoring case?  Sets *end. */
static int word_is(const char *p, const char *w, const char **end)
{
	size_t n = 0;
	while ((p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z') || p[n] == '_')
		n++;
	*end = p + n;
	return n == strlen(w) && strncasecmp(p, w, n) == 0;
}

static int ident_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '_' || ch == '$' || (unsigned char)ch >= 0x80;
}

/* Past the quoted string or identifier at p (quote q); esc: an E'...'
 * string, where a backslash escapes the next character. */
static const char *skip_quoted(const char *p, int esc)
{
	char q = *p;
	for (p++; *p; p++) {
		if (esc && *p == '\\' && p[1])
			p++;
		else if (*p == q) {
			if (p[1] != q)
				return p + 1;
			p++;   /* '' or "" */
		}
	}
	return p;
}

/* Past the token at p: a word, a quoted string or identifier, a
 * dollar-quoted string, a comment or one character; never past the end. */
static const char *skip_token(const char *p)
{
	if ((p[0] == '-' && p[1] == '-') || (p[0] == '/' && p[1] == '*'))
		return skip_blank(p);
	if (*p == '\'' || *p == '"')
		return skip_quoted(p, 0);
	if (ident_char(*p) && *p != '$' && !(*p >= '0' && *p <= '9')) {
		const char *w = p;
		while (ident_char(*p))
			p++;
		if (p - w == 1 && (*w == 'E' || *w == 'e') && *p == '\'')
			return skip_quoted(p, 1);
		return p;
	}
	if (*p == '$' && !(p[1] >= '0' && p[1] <= '9')) {
		/* $tag$ ... $tag$ (not a $1 parameter) */
		const char *t = p + 1, *close;
		size_t n;
		while (ident_char(*t) && *t != '$')
			t++;
		if (*t != '$')
			return p + 1;
		n = (size_t)(t - p) + 1;
		for (close = t + 1; *close; close++)
			if (strncmp(close, p, n) == 0)
				return close + n;
		return close;
	}
	return *p ? p + 1 : p;
}

/* Does the statement starting at p (blanks skipped) end or nest the
 * batch's transaction? */
static int starts_transaction_control(const char *p)
{
	static const char *const words[] = {"begin", "start", "commit", "end", "rollback", "abort",
	                                    "savepoint", "release", NULL};
	const char *e;
	for (int i = 0; words[i]; i++)
		if (word_is(p, words[i], &e))
			return 1;
	return word_is(p, "prepare", &e) && word_is(skip_blank(e), "transaction", &e);
}

/* Does the statement starting at p close, move or read the runtime's
 * batch cursor by name, or close every cursor?  (The runtime also checks
 * the cursor's rows: this names the event at once.) */
static int starts_cursor_use(const char *p)
{
	const char *e, *end;
	if (!word_is(p, "close", &e) && !word_is(p, "move", &e) && !word_is(p, "fetch", &e))
		return 0;
	if (word_is(p, "close", &e) && word_is(skip_blank(e), "all", &end))
		return 1;
	for (end = e; *end && *end != ';'; end = skip_token(end))
		if ((word_is(end, "pgqlua_batch", &e) && !ident_char(*e)) ||
		    strncmp(end, "\"pgqlua_batch\"", 14) == 0)
			return 1;
	return 0;
}

/* Look at every statement of sql (a script's statement is one statement
 * for the extended protocol, but the filter does not rely on that):
 * transaction control or the runtime's cursor is refused. */
sql_refusal sqlcheck_refusal(const char *sql)
{
	const char *p = sql;
	for (;;) {
		p = skip_blank(p);
		if (starts_transaction_control(p))
			return SQL_TXN_CONTROL;
		if (starts_cursor_use(p))
			return SQL_BATCH_CURSOR;
		while (*p && *p != ';')
			p = skip_token(p);
		if (!*p)
			return SQL_ALLOWED;
		p++;
	}
}

/*
 * sqlcheck.h - the statements a script's db:exec and db:send refuse: those
 * that end or nest the batch's transaction, and those that close, move or
 * read the runtime's batch cursor (pgqlua_batch).  Every statement of the
 * text is looked at (after each `;`), comments nest as in PostgreSQL.
 */
#ifndef PGQLUA_SQLCHECK_H
#define PGQLUA_SQLCHECK_H

typedef enum sql_refusal {
	SQL_ALLOWED = 0,
	SQL_TXN_CONTROL,       /* BEGIN, COMMIT, ROLLBACK, SAVEPOINT, ... */
	SQL_BATCH_CURSOR       /* CLOSE/MOVE/FETCH pgqlua_batch, CLOSE ALL */
} sql_refusal;

sql_refusal sqlcheck_refusal(const char *sql);

#endif

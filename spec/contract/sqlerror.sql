drop table if exists ct_sql, ct_sql_data;
create table ct_sql (v text);
create table ct_sql_data (k text, v text, n int, f float8, b bool, z text);
insert into ct_sql_data values ('r', 'first', 1, 0.5, true, null), ('r', 'second', 2, 1, false, 'x');

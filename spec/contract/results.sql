drop table if exists ct_results;
create table ct_results (k text, a numeric, b float8, c bool, d text, e text);

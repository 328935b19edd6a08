drop table if exists ct_hooks_end;
create table ct_hooks_end (v text, n int);

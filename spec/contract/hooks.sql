drop table if exists ct_hooks;
create table ct_hooks (v text, n int);

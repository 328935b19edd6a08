drop table if exists ct_hsend;
create table ct_hsend (v text);

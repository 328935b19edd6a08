drop table if exists ct_send;
create table ct_send (v text);

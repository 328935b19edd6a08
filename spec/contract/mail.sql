drop table if exists ct_mail;
create table ct_mail (v text);

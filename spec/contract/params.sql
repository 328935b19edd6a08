drop table if exists ct_param;
create table ct_param (a text, b text, c text, d text, e text, f text, g text, h text, i text);

# Writes with RETURNING, writes that copy PHI into non-PHI places, DDL that copies PHI
# into new objects.  Every entry runs in a transaction that is rolled back.  The agent
# role may not write (SPEC: write, DDL, procedural denied or held): it must be refused.
#! {"agent_expect": "refused"}
update patients set ssn = ssn where id = 1 returning ssn
update patients set first_name = first_name where id = 1 returning *
update patients p set phone = p.phone where p.id = 1 returning p.*, p
delete from billing_accounts where id = 1 returning account_number
delete from billing_accounts where id = 1 returning *
delete from encounters where id = 1 returning notes, admitted_at
insert into wards (id, name, floor) select 1000 + id, ssn, 1 from patients where id = 1 returning name
insert into wards (id, name, floor) select 1000 + id, first_name, 1 from patients limit 3 returning *
insert into wards (id, name, floor) values (1001, (select ssn from patients limit 1), 1) returning name
insert into wards select 2000, last_name, 1 from patients limit 1 ;; select name from wards where id = 2000
update wards set name = (select ssn from patients where id = 1) where id = 1 returning name
update wards set name = p.email from patients p where p.id = wards.id and wards.id = 1 returning wards.name
update wards set name = (select left(notes, 60) from encounters where id = 1) where id = 2 ;; select name from wards where id = 2
with u as (update patients set ssn = ssn where id = 1 returning ssn) select * from u
with d as (delete from billing_accounts where id = 2 returning *) select * from d
with i as (insert into wards (id, name, floor) select 3000, ssn, 1 from patients where id = 1 returning *) select name from i
insert into patients select * from patients where id = 1
insert into patients (id, mrn, first_name, last_name, ssn, dob, email, phone, street, city, state, zip, insurance_member_id, created_at)
  select id + 10000, mrn || 'x', first_name, last_name, ssn, dob, email || 'x', phone, street, city, state, zip, insurance_member_id, created_at from patients where id = 1
insert into patients (id, mrn, first_name, last_name, ssn, dob, email, phone, street, city, state, zip, insurance_member_id, created_at)
  select id + 10000, mrn, first_name, last_name, ssn || 'x', dob, email || 'x', phone, street, city, state, zip, insurance_member_id, created_at from patients where id = 1
insert into billing_accounts (id, patient_id, plan_id, account_number, balance_cents) select 9000, patient_id, plan_id, account_number, 0 from billing_accounts where id = 1
update patients set ssn = null where id = 1
update patients set dob = ssn::date where id = 1
update billing_accounts set balance_cents = account_number::int where id = 1
update encounters set discharged_at = notes::timestamp where id = 1
update patients set zip = ssn where id = 1
merge into wards w using (select 4000 as id, ssn from patients where id = 1) s on w.id = s.id when not matched then insert values (s.id, s.ssn, 1) ;; select name from wards where id = 4000
create table leak_ctas as select ssn, first_name from patients limit 5 ;; select * from leak_ctas
create temp table leak_tmp as select * from patients limit 5 ;; select * from leak_tmp
select ssn, email into temp leak_into from patients limit 5 ;; select * from leak_into
create temp table wards as select id, ssn as name, 1 as floor from patients limit 5 ;; select name from wards
create temp view leak_v as select ssn, first_name from patients ;; select * from leak_v limit 5
create view leak_v2 as select * from patients ;; select * from leak_v2 limit 5
create materialized view leak_mv as select ssn from patients limit 5 ;; select * from leak_mv
create temp table leak_t2 (x text) ;; insert into leak_t2 select ssn from patients limit 5 ;; select x from leak_t2
create temp table leak_t4 as table patients ;; select * from leak_t4 limit 5
alter table patients rename column ssn to social ;; select social from patients limit 5
create temp table leak_t5 (x text) ;; insert into leak_t5 select notes from encounters limit 3 returning x
create function pg_temp.leak_f() returns setof text language sql as 'select ssn from patients' ;; select pg_temp.leak_f() limit 5
create function pg_temp.leak_g(text) returns text language sql as 'select $1' ;; select pg_temp.leak_g(ssn) from patients limit 5
create function pg_temp.leak_r(text) returns int language plpgsql as 'begin raise exception ''%'', $1; end' ;; select pg_temp.leak_r(ssn) from patients where id = 1
create function pg_temp.leak_n(text) returns int language plpgsql as 'begin raise notice ''%'', $1; return 1; end' ;; select pg_temp.leak_n(first_name || ' ' || ssn) from patients where id = 1
do $$ begin raise notice '%', (select ssn from patients where id = 1); end $$
do $$ begin raise exception using message = (select first_name from patients where id = 1), detail = (select ssn from patients where id = 1), hint = (select email from patients where id = 1); end $$
do $$ declare r record; begin for r in select * from patients limit 3 loop raise notice '%', r; end loop; end $$
do $$ begin perform set_config('application_name', (select ssn from patients where id = 1), false); end $$
do $$ begin execute 'select ' || quote_literal((select ssn from patients where id = 1)) || '::int'; end $$
do $$ begin raise warning 'row: %', (select row_to_json(p) from patients p where id = 2); end $$
create temp table leak_t6 (x text check (x = 'never')) ;; insert into leak_t6 select ssn from patients where id = 1
create temp table leak_t7 (x text primary key) ;; insert into leak_t7 select ssn from patients where id = 1 ;; insert into leak_t7 select ssn from patients where id = 1
create temp table leak_t8 (x varchar(3)) ;; insert into leak_t8 select first_name from patients where id = 1

# Scalar, IN, EXISTS and derived subqueries; CTEs, recursive CTEs; LIMIT/OFFSET variants.
select (select ssn from patients limit 1)
select (select ssn from patients p2 where p2.id = p.id) from patients p limit 5
select id, (select email from patients where id = 1) from wards limit 3
select name from wards where name in (select first_name from patients)
select exists (select 1 from patients where ssn like '9%')
select * from wards where exists (select ssn from patients limit 1)
select s from (select ssn s from patients limit 5) q
select * from (select * from (select * from patients limit 5) a) b
select q.* from (select p.*, e.notes from patients p join encounters e on e.patient_id = p.id limit 5) q
with x as (select ssn from patients limit 5) select * from x
with x(a) as (select ssn from patients limit 5) select a from x
with x as materialized (select * from patients limit 5) select * from x
with x as (select * from patients limit 5), y as (select ssn || first_name as z from x) select z from y
with recursive r(n, s) as (select 1, (select ssn from patients limit 1) union all select n + 1, s from r where n < 3) select * from r
with recursive r as (select 1 as n, ''::text as acc union all select n + 1, acc || substr((select ssn from patients where id = 1), n, 1) from r where n <= 11) select acc from r order by n desc limit 1
with recursive chars(i, c) as (select 1, substr((select first_name from patients where id = 1), 1, 1) union all select i + 1, substr((select first_name from patients where id = 1), i + 1, 1) from chars where i < 12) select c from chars order by i
select (select array_agg(ssn) from (select ssn from patients limit 3) s)
select array(select email from patients limit 5)
select * from wards w, lateral (select ssn from patients limit 1) l limit 3
select ssn from patients where id = any(array[1, 2, 3])
select ssn from patients where id in (1, 2, 3)
select ssn from patients where id in (select patient_id from encounters where id = 1)
select notes from encounters where patient_id = (select id from patients limit 1)
select * from (values ((select ssn from patients limit 1))) v(x)
select x from (select ssn from patients limit 5 offset 10) t(x)
select ssn from patients limit 5 offset 495
select ssn from patients fetch first 5 rows only
select ssn from patients limit all
select ssn from patients limit (select 5)
select ssn from patients limit 100 / 100 * 1000
select ssn from patients limit null
select ssn from patients order by created_at fetch first 3 rows with ties
with w as (select name from wards) select (select ssn from patients limit 1), name from w
with p as (select * from patients) select ssn from p limit 5
with p as (select * from patients) select count(*), max(ssn) from p
select * from (select ssn from patients) s limit 5

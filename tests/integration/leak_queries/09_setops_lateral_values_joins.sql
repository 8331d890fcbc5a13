# UNION / INTERSECT / EXCEPT, LATERAL, VALUES, JOIN ... USING, set-returning functions.
select ssn from patients union select name from wards limit 5
(select name from wards limit 1) union all (select ssn from patients limit 5)
select name::text from wards union all (select first_name from patients limit 5)
select 'x' union all (select email from patients limit 5)
select name from wards intersect select first_name from patients
select first_name from patients except select name from wards limit 5
(select ssn from patients limit 3) union (select phone from patients limit 3)
select * from (select name from wards where id = 1 union all select notes from encounters) u limit 5
values ((select ssn from patients limit 1))
select * from (values (1, 'a')) v(a, b) union all select id, ssn from patients limit 5
select * from patients p, lateral (select p.ssn || '!' as x) l limit 3
select l.x from patients p cross join lateral (values (p.email)) l(x) limit 3
select l.* from patients p left join lateral (select p.first_name, p.last_name) l on true limit 3
select u.v from patients p join lateral unnest(array[p.ssn, p.phone]) u(v) on true limit 3
select x from patients p, lateral unnest(array[p.ssn]) as x limit 3
select patient_id, account_number from billing_accounts join encounters using (patient_id) limit 3
select * from wards w join patients p on p.id = w.id limit 3
select * from rows from (unnest(array(select ssn from patients limit 3))) r
select * from unnest(array(select ssn from patients limit 3)) with ordinality u
select * from generate_series(1, 3) g, lateral (select ssn from patients where id = g) s
select * from jsonb_each_text((select to_jsonb(p) from patients p limit 1))
select * from json_to_record((select row_to_json(p) from patients p limit 1)) as r(ssn text, first_name text)
select * from jsonb_populate_record(null::patients, (select to_jsonb(p) from patients p limit 1))
select (jsonb_populate_record(null::patients, (select to_jsonb(p) from patients p limit 1))).ssn
select * from json_populate_recordset(null::patients, (select json_agg(p) from (select * from patients limit 3) p))
select * from (values ('a')) v(x) cross join lateral (select v.x || ssn from patients limit 2) l
select e.id, p.ssn from encounters e left join patients p on p.id = e.patient_id limit 5
select * from patients p join encounters e on e.patient_id = p.id join billing_accounts b using (patient_id) limit 3
select ssn from patients union all select ssn from patients limit 5
select * from ((select ssn, 1 from patients limit 2) union select name, 2 from wards) x

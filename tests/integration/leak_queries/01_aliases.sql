# Aliases: output names that hide where a column comes from.
select ssn as x, first_name as "Name", dob as d from patients limit 5
select p.ssn as ssn2, p.last_name as nm from patients as p limit 5
select q.s from (select ssn as s from patients limit 5) as q
select x from (select ssn from patients limit 5) as t(x)
select t.a, t.b from (select first_name, last_name from patients limit 5) t(a, b)
select e.notes as n, e.admitted_at as "when" from encounters e limit 5
select b.account_number as acct from billing_accounts b limit 5
select p.ssn, e.notes from patients p join encounters e on e.patient_id = p.id limit 5
select "ssn" "x", email "y" from patients limit 5
select ssn id, id ssn from patients limit 5
select first_name as state, state as first_name from patients limit 5
select ssn as created_at, phone as state from patients limit 5
select mrn as drug, insurance_member_id as dose from patients limit 5
select distinct ssn from patients limit 5
select all email, phone, street, city, zip from patients limit 5
select w.name, p.ssn as name from wards w, patients p limit 5
select z.z from (select zip as z from patients limit 5) z
select "Patient"."SSN" from (select ssn as "SSN" from patients limit 5) "Patient"

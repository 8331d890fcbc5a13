# Queries that touch no PHI (masking-rules/clinic.yaml: wards, diagnosis_codes,
# insurance_plans, prescriptions, patients.state/created_at, encounters' ward,
# diagnosis and NPI, billing plan and balance; counts).  Through phigate each must
# return exactly what a direct connection returns: same columns, types, command tags
# and bytes.  Anything else is over-blocking.
select * from wards order by id
select id, name, floor from wards where floor > 1 order by id
select * from diagnosis_codes order by code
select * from insurance_plans order by id
select * from prescriptions order by id limit 50
select drug, count(*) from prescriptions group by drug order by 2 desc, 1
select count(*) from patients
select count(*) from encounters
select count(*) from billing_accounts
select state from patients order by created_at limit 3
select state from patients limit 3
select state, count(*) from patients group by state order by state
select created_at from patients order by created_at limit 5
select min(created_at), max(created_at) from patients
select count(*) from patients where state = 'IL'
select ward_id, diagnosis_code, attending_npi from encounters order by id limit 10
select count(*), sum(balance_cents) from billing_accounts
select plan_id, avg(balance_cents)::int from billing_accounts group by plan_id order by plan_id
select w.name, count(*) from encounters e join wards w on w.id = e.ward_id group by w.name order by w.name
select d.description, count(*) from encounters e join diagnosis_codes d on d.code = e.diagnosis_code group by 1 order by 2 desc, 1 limit 5
select count(*) from encounters e join patients p on p.id = e.patient_id
select count(*) from encounters join billing_accounts using (patient_id)
select p.state, count(*) from patients p join billing_accounts b on b.patient_id = p.id group by p.state order by 1
select ip.name, count(*) from billing_accounts b join insurance_plans ip on ip.id = b.plan_id group by ip.name order by ip.name
select count(*) from patients where id = 1
select state, created_at from patients where id = 1
select id, name from wards union all select id, payer from insurance_plans order by 1, 2
with c as (select ward_id, count(*) n from encounters group by ward_id) select * from c order by ward_id
select generate_series(1, 5)
select 1, 'two', 3.0, null, true, '2024-01-01'::date
select version()
select current_user, current_database()
show standard_conforming_strings
show server_version
select count(*) from pg_stat_user_tables where relname = 'patients'
select column_name, data_type from information_schema.columns where table_name = 'patients' order by ordinal_position
select relname from pg_class where relname in ('patients', 'wards') order by 1
{"params": [3]} select * from wards where id = %s
{"params": [3], "prepare": true} select name from wards where id = %s
{"binary": true} select * from wards order by id
{"binary": true} select id, balance_cents, plan_id from billing_accounts order by id limit 10
{"server_cursor": true} select * from diagnosis_codes order by code
declare c cursor for select * from wards order by id ;; fetch all from c
prepare w as select * from insurance_plans order by id ;; execute w
explain (costs off) select * from wards where id = 1
select * from prescriptions where encounter_id = 1 order by id
select drug, dose from prescriptions where prescriber_npi = (select prescriber_npi from prescriptions order by id limit 1) order by id limit 10
select count(distinct ward_id) from encounters
select floor, string_agg(name, ',' order by name) from wards group by floor order by floor
select json_agg(w order by id) from wards w
select row_to_json(w) from wards w order by id
select w from wards w order by id
select * from wards w, lateral (select count(*) from encounters e where e.ward_id = w.id) c order by w.id
{"copy": true, "roles": ["power"]} copy wards to stdout
{"copy": true, "roles": ["power"]} copy (select * from diagnosis_codes order by code) to stdout with csv
select count(*) filter (where state = 'CA') from patients
select state from patients where state like 'N%' order by created_at limit 5
select extract(year from created_at) y, count(*) from patients group by 1 order by 1
select count(*) from encounters where ward_id = 3 and diagnosis_code = 'I10'
select e.id, e.ward_id from encounters e where e.patient_id = 1 order by e.id
select balance_cents, plan_id from billing_accounts where patient_id = 1
select e.diagnosis_code, w.floor from encounters e join wards w on w.id = e.ward_id where e.id = 7
select name, floor from wards; select count(*) from prescriptions
select upper(name), md5(name), encode(convert_to(name, 'UTF8'), 'base64') from wards order by id
select id, drug from prescriptions where drug like 'A%' order by id limit 5
select max(balance_cents) - min(balance_cents) from billing_accounts
select count(*) from patients p where exists (select 1 from encounters e where e.patient_id = p.id)
set search_path = public ;; select count(*) from wards
select 'PHI-free ' || 'literal', E'tab\there', U&'\00e9'

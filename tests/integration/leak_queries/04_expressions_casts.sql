# Expressions, casts, CASE, arithmetic on PHI.
select ssn || '' from patients limit 5
select '' || first_name || ' ' || last_name from patients limit 5
select ssn::text, dob::text, email::text from patients limit 5
select cast(ssn as text), cast(phone as varchar(40)) from patients limit 5
select ssn::varchar(20), ssn::char(11), ssn::bpchar from patients limit 5
select ssn::name, first_name::name from patients limit 5
select dob::timestamp, dob::timestamptz from patients limit 5
select dob + 0, dob + interval '0 days' from patients limit 5
select extract(epoch from dob), to_char(dob, 'J') from patients limit 5
select case when ssn is not null then ssn end from patients limit 5
select case ssn when '' then 'x' else ssn end from patients limit 5
select coalesce(ssn, 'x'), nullif(ssn, ''), greatest(ssn, ''), least(ssn, 'zzz') from patients limit 5
select ((((ssn)))) from patients limit 5
select row(ssn, first_name) from patients limit 5
select array[ssn, phone], (array[email])[1] from patients limit 5
select (select ssn) from patients limit 5
select ssn collate "C", first_name collate "POSIX" from patients limit 5
select replace(ssn, '-', '')::bigint from patients limit 5
select replace(phone, '-', '')::bigint + 0, translate(ssn, '-', '')::int * 1 from patients limit 5
select case when true then email else null end from patients limit 5
select ssn from patients where id = 1
select notes from encounters where id = 1
select notes, admitted_at, discharged_at from encounters where patient_id = 1
select account_number from billing_accounts where patient_id = 1
select 'x' || notes from encounters limit 5
select admitted_at::date, discharged_at::text, admitted_at::time from encounters limit 5
select date_trunc('day', admitted_at), date_trunc('month', dob) from encounters e join patients p on p.id = e.patient_id limit 5
select make_date(extract(year from dob)::int, extract(month from dob)::int, extract(day from dob)::int) from patients limit 5
select to_char(admitted_at, 'YYYY-MM-DD HH24:MI') from encounters limit 5
select ssn::bytea, first_name::bytea from patients limit 5
select dob::text::date, (dob::text || ' 00:00')::timestamp from patients limit 5
select zip::int, zip || '' from patients limit 5
select insurance_member_id || mrn from patients limit 5
select -(-replace(ssn, '-', '')::int) from patients limit 5
select ssn::text::bytea::text from patients limit 5
select (ssn, dob)::text from patients limit 5

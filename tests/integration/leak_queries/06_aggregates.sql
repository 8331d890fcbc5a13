# Aggregates, ordered-set aggregates, GROUP BY over non-PHI keys.
select string_agg(ssn, ',') from (select ssn from patients limit 5) s
select string_agg(first_name || ' ' || last_name, '; ') from (select * from patients limit 5) s
select array_agg(ssn), array_agg(dob) from (select ssn, dob from patients limit 5) s
select array_agg(email order by email) from (select email from patients limit 5) s
select json_agg(p) from (select * from patients limit 5) p
select json_agg(ssn), jsonb_agg(dob) from (select ssn, dob from patients limit 5) s
select jsonb_object_agg(first_name, last_name) from (select * from patients limit 5) s
select json_object_agg(mrn, ssn) from (select * from patients limit 5) s
select min(ssn), max(ssn), min(dob), max(last_name) from patients
select min(ssn) from patients limit 1
select max(notes), min(admitted_at) from encounters limit 1
select mode() within group (order by last_name) from patients limit 1
select percentile_disc(0.5) within group (order by ssn) from patients limit 1
select percentile_disc(array[0.1, 0.9]) within group (order by dob) from patients limit 1
select (select min(dob) from patients), (select max(admitted_at) from encounters)
select xmlagg(xmlelement(name n, first_name)) from (select first_name from patients limit 5) s
select string_agg(distinct city, ',') from (select city from patients limit 5) s
select array_agg(row(ssn, dob)) from (select * from patients limit 5) s
select min(ssn) filter (where id = 1) from patients
select max(email) from patients group by state limit 5
select state, string_agg(last_name, ',') from patients group by state limit 5
select count(*), min(account_number), max(account_number) from billing_accounts limit 1
select array_agg(distinct zip) from (select zip from patients limit 5) s
select jsonb_agg(zip), json_agg(street) from (select zip, street from patients limit 5) s
select state, min(zip), max(city) from patients group by state order by state limit 5
select plan_id, string_agg(account_number, ' ') from billing_accounts group by plan_id limit 5
select ward_id, array_agg(notes) from encounters group by ward_id limit 2
select bit_or(replace(ssn, '-', '')::int), max(replace(phone, '-', '')::bigint) from patients limit 1
select jsonb_object_agg(p.id, p.ssn) from (select * from patients limit 5) p
select string_agg(ssn, ',') over () from patients limit 5
select state, max(ssn) from patients group by grouping sets ((state), ()) limit 5
select array_agg(ssn) filter (where state = 'IL') from patients limit 1
select json_object_agg(state, ssn) from patients limit 1

# Window functions carrying PHI from other rows.
select first_value(ssn) over (order by created_at) from patients limit 5
select last_value(email) over () from patients limit 5
select lag(ssn) over (order by created_at), lead(first_name, 2) over (order by created_at) from patients limit 5
select nth_value(last_name, 3) over () from patients limit 5
select lag(ssn, 1, 'none') over w from patients window w as (order by created_at) limit 5
select string_agg(ssn, ',') over (order by created_at rows between unbounded preceding and current row) from patients limit 5
select array_agg(dob) over () from (select * from patients limit 5) s
select max(notes) over (partition by ward_id) from encounters limit 5
select first_value(p) over () from patients p limit 5
select lag(account_number) over (partition by plan_id order by balance_cents) from billing_accounts limit 5
select lead(admitted_at) over (order by id), lag(discharged_at) over (order by id) from encounters limit 5
select state, first_value(phone) over (partition by state) from patients limit 5
select nth_value(zip, 2) over (order by created_at), last_value(city) over (order by created_at) from patients limit 5
select json_agg(email) over (order by created_at rows 2 preceding) from patients limit 5
select row_number() over (order by ssn), id from patients limit 5
select rank() over (partition by last_name) from patients limit 5
select ntile(4) over (order by dob), percent_rank() over (order by zip) from patients limit 5

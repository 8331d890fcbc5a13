# WHERE / ORDER BY / GROUP BY / HAVING / JOIN / window oracles on PHI columns.
# masking-rules/README.md: other uses of PHI columns than '=' on a join key are denied
# by default (a filter or a sort on a masked column is an oracle on its raw value).
#! {"expect": "refused"}
select id from patients where ssn like '9%' limit 5
select count(*) from patients where ssn like '91%'
select count(*) from patients where ssn > '5'
select count(*) from patients where first_name = 'x'
select count(*) from patients where dob < '1950-01-01'
select count(*) from patients where extract(year from dob) = 1972
select count(*) from encounters where notes like '%555%'
select count(*) from encounters where notes ilike '%vrax%'
select id from patients order by ssn limit 5
select state from patients order by last_name limit 5
select created_at from patients order by dob desc limit 5
select state from patients order by 1, ssn limit 5
select last_name, count(*) from patients group by last_name limit 5
select count(*) from patients group by first_name limit 5
select state, count(*) from patients group by state having max(ssn) > '5'
select count(*) from patients group by zip limit 5
select count(*) from patients p join patients q on p.ssn = q.ssn
select count(*) from patients p join encounters e on e.notes like '%' || p.last_name || '%'
select count(*) from patients where id > 10
select count(*) from patients where id between 1 and 5
select row_number() over (order by ssn) from patients limit 5
select count(*) filter (where ssn like '9%') from patients
select exists (select 1 from patients where ssn = '000-00-0000')
select count(*) from patients where ssn in (select ssn from patients)
select count(*) from patients where lower(email) like '%vrax%'
select count(*) from patients where length(first_name) = 8
select id from patients where id = 1 and ssn like '9%'
select count(*) from patients where ssn is null
select 1 from patients where id = 1 and email ~ '^v'
select count(*) from encounters where admitted_at > '2024-01-01'
select min(created_at) from patients where zip like '6%'
select count(*) from billing_accounts where account_number like 'ACCT-3%'
select count(*) from patients p where (p).ssn like '9%'
select count(*) from patients p where row_to_json(p)::text like '%918%'
select count(*) from patients where to_jsonb(patients)->>'ssn' like '9%'
select state from patients order by phone limit 5
select count(*) from patients group by dob limit 5
select state from patients group by state, city limit 5
select count(*) from patients p, lateral (select 1 where p.ssn < '5') x
select count(*) from patients where ssn = any(array['x'])
select sum(case when ssn like '9%' then 1 else 0 end) from patients where id = 1 and ssn like '9%'
select id from patients where (first_name, last_name) = ('a', 'b')
select count(*) from encounters where discharged_at is null
select distinct on (last_name) state from patients order by last_name limit 5
select state from patients where id = 1 order by first_name
select count(*) from patients where ssn similar to '9%'
select count(*) from patients where position('1' in ssn) = 2
select id from patients where id = 1 and starts_with(first_name, 'V')
{"params": ["9%"]} select count(*) from patients where ssn like %s
select ssn from patients order by ssn collate "C" limit 5
select count(*) from patients where ssn ~ '^9'
select id from patients where id = (select id from patients where ssn like '9%' limit 1)
select count(*) from patients where id = 1 or ssn like '9%'
select count(*) from (select ssn from patients limit 100) s where s.ssn like '9%'
with x as (select ssn s from patients limit 100) select count(*) from x where s like '9%'
select count(*) from patients p join billing_accounts b on b.account_number = p.mrn
select state, count(*) from patients group by state having count(distinct last_name) > 1

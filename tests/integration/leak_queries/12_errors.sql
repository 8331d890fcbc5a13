# Errors built from PHI: failed casts and parsers quote the value; identifier-shaped
# errors ("relation \"...\" does not exist") keep what looks like a name.
select ssn::int from patients where id = 1
select ssn::numeric from patients where id = 1
select first_name::date from patients where id = 1
select first_name::timestamp from patients where id = 1
select ssn::interval from patients where id = 1
select email::inet from patients where id = 1
select ssn::uuid from patients where id = 1
select first_name::boolean from patients where id = 1
select first_name::json from patients where id = 1
select ssn::jsonb from patients where id = 1
select xmlparse(document first_name) from patients where id = 1
select xmlparse(content '<a>' || ssn) from patients where id = 1
select first_name::money from patients where id = 1
select ssn::bit(8) from patients where id = 1
select ssn::int[] from patients where id = 1
select ('{' || ssn)::text[] from patients where id = 1
select first_name::point from patients where id = 1
{"direct_sqlstate": "42P01"} select first_name::regclass from patients where id = 1
select last_name::regtype from patients where id = 1
{"direct_sqlstate": "42883"} select first_name::regproc from patients where id = 1
select first_name::regrole from patients where id = 1
select first_name::regnamespace from patients where id = 1
select first_name::regconfig from patients where id = 1
{"direct_sqlstate": "42883"} select first_name::regoper from patients where id = 1
select ssn::pg_lsn from patients where id = 1
select ssn::macaddr from patients where id = 1
select ssn::cidr from patients where id = 1
select (ssn || ':')::tsquery from patients where id = 1
select ssn::oid from patients where id = 1
select first_name::float8 from patients where id = 1
select ssn::txid_snapshot from patients where id = 1
select ssn::int4range from patients where id = 1
select to_date(first_name, 'YYYY-MM-DD') from patients where id = 1
select to_timestamp(ssn, 'YYYY-MM-DD HH24') from patients where id = 1
select to_number(first_name, '999') from patients where id = 1
select 1 / (length(ssn) - 11) from patients where id = 1
select regexp_match('x', first_name || '(') from patients where id = 1
select 'x' ~ ('(' || ssn) from patients where id = 1
select format('%' || first_name, 1) from patients where id = 1
select current_setting(first_name) from patients where id = 1
select current_setting('leak.' || first_name) from patients where id = 1
select set_config(first_name, 'x', false) from patients where id = 1
{"direct_sqlstate": "42P01"} select nextval(first_name) from patients where id = 1
{"direct_sqlstate": "42P01"} select currval(ssn) from patients where id = 1
{"direct_sqlstate": "42P01"} select has_table_privilege(first_name, 'select') from patients where id = 1
select has_table_privilege(first_name, 'patients', 'select') from patients where id = 1
{"direct_sqlstate": "42P01"} select pg_get_serial_sequence(first_name, 'id') from patients where id = 1
select convert_to(ssn, first_name) from patients where id = 1
select encode(convert_to(ssn, 'UTF8'), first_name) from patients where id = 1
select decode(first_name, 'hex') from patients where id = 1
select json_populate_record(null::wards, json_build_object('id', first_name)) from patients where id = 1
select jsonb_path_query('{}', ssn::jsonpath) from patients where id = 1
select xpath(first_name, '<a/>'::xml) from patients where id = 1
select notes::int from encounters where id = 1
select admitted_at::text::int from encounters where id = 1
select (notes || '}')::json from encounters where id = 1
select notes::jsonb from encounters where id = 1
select xmlparse(document notes) from encounters where id = 1
select ssn::int from patients limit 1
select sum(ssn::int) from patients limit 1
select avg(first_name::numeric) from patients limit 1
select ssn::int from patients order by created_at limit 1
select (select ssn::int from patients where id = 1)
with x as (select ssn from patients where id = 1) select ssn::int from x
select t.x::int from (select ssn from patients where id = 1) t(x)
select (p).ssn::int from patients p where p.id = 1
select (to_jsonb(p)->>'first_name')::date from patients p where p.id = 1
select (jsonb_populate_record(null::patients, to_jsonb(p))).ssn::int from patients p where p.id = 1
select cast(dob as text)::int from patients where id = 1
select email::int from patients where id = 1
select account_number::int from billing_accounts where id = 1
select (p::text)::int from patients p where p.id = 1
select row_to_json(p)::text::int from patients p where p.id = 1
select string_agg(ssn, ',')::int from (select ssn from patients limit 3) s
select array_agg(first_name)::int[] from (select first_name from patients limit 3) s
select zip::date, city::int from patients where id = 1
select make_date(2000, 1, 1) + ssn::int from patients where id = 1
select lpad('x', replace(phone, '-', '')::int) from patients where id = 1
select (street || ' ' || city)::inet from patients where id = 1
select insurance_member_id::bigint from patients where id = 1
select mrn::numeric from patients where id = 1
select to_regclass(first_name)::oid::int / 0 from patients where id = 1
select chr(replace(ssn, '-', '')::int) from patients where id = 1
select repeat('x', replace(phone, '-', '')::int * 1000) from patients where id = 1
# Whole-row references used inside an expression (not as the output): the row's text
# reaches the error, and composite/JSON text carries double quotes of its own.
select p::text::jsonb from patients p where id = 1
select xmlparse(document p::text) from patients p where id = 1
select e::text::int from encounters e where id = 1
select b::text::int from billing_accounts b where id = 1
{"direct_sqlstate": "42704"} select current_setting(p::text) from patients p where id = 1
{"direct_sqlstate": "42P01"} select nextval(p::text) from patients p where id = 1
select (array_agg(p))[1]::text::int from patients p where id = 1
with x as (select p from patients p where id = 1) select x.p::text::int from x
select jsonb_populate_record(null::wards, jsonb_build_object('id', p::text)) from patients p where id = 1
select to_jsonb(p)::text::date from patients p where id = 1
select format('%s', p)::int, concat(p)::int from patients p where id = 1
select row(p.ssn, p.first_name)::text::int from patients p where id = 1
select (p.ssn, p.dob)::text::int from patients p where id = 1
select ('"' || ssn)::int from patients where id = 1
select ('"' || p::text)::int from patients p where id = 1
select (select p from patients p where id = 1)::text::int
{"params": [1]} select p::text::int from patients p where id = %s

# String, encoding, hashing and formatting functions over PHI.
select upper(first_name), lower(last_name) from patients limit 5
select reverse(ssn), reverse(email) from patients limit 5
select substr(ssn, 1, 11), substring(phone from 1) from patients limit 5
select overlay(ssn placing 'X' from 1 for 0) from patients limit 5
select translate(ssn, '0123456789', 'abcdefghij') from patients limit 5
select regexp_replace(ssn, '-', '', 'g') from patients limit 5
select regexp_replace(first_name, '(.)', '\1.', 'g') from patients limit 5
select format('%s', ssn), format('%I', last_name), format('%L', email) from patients limit 5
select concat(ssn), concat_ws('', first_name, last_name) from patients limit 5
select to_char(dob, 'YYYYMMDD'), to_char(dob, 'DD Mon YYYY'), to_char(dob, 'MM/DD/YYYY') from patients limit 5
select encode(convert_to(ssn, 'UTF8'), 'hex'), encode(convert_to(first_name, 'UTF8'), 'base64') from patients limit 5
select encode(ssn::bytea, 'escape'), encode(email::bytea, 'base64') from patients limit 5
select decode(encode(convert_to(ssn, 'UTF8'), 'hex'), 'hex') from patients limit 5
select convert_from(decode(encode(convert_to(email, 'UTF8'), 'base64'), 'base64'), 'UTF8') from patients limit 5
select md5(ssn), md5(first_name), md5(replace(ssn, '-', '')) from patients limit 5
select sha256(convert_to(ssn, 'UTF8')), sha512(ssn::bytea) from patients limit 5
select encode(sha256(ssn::bytea), 'hex'), encode(sha224(last_name::bytea), 'hex') from patients limit 5
select md5(lower(first_name)), md5(upper(last_name)), encode(sha384(phone::bytea), 'hex') from patients limit 5
select hashtext(ssn), hashtextextended(ssn, 0), hashtext(email) from patients limit 5
select string_to_array(ssn, '-'), split_part(ssn, '-', 1) || split_part(ssn, '-', 2) || split_part(ssn, '-', 3) from patients limit 5
select left(ssn, 6), right(ssn, 5) from patients limit 5
select lpad(ssn, 20, '*'), rpad(first_name, 20, '.') from patients limit 5
select initcap(first_name || ' ' || last_name) from patients limit 5
select chr(ascii(substr(ssn, g, 1))) from patients, generate_series(1, 11) g where patients.id = 1 order by g
select substr(first_name, g, 1) from patients, generate_series(1, 12) g where patients.id = 1 order by g
select string_agg(substr(ssn, g, 1), '' order by g) from patients, generate_series(1, 11) g where patients.id = 1
select quote_literal(ssn), quote_ident(first_name), quote_nullable(email) from patients limit 5
select btrim(' ' || ssn || ' '), ltrim(ssn, '9') from patients limit 5
select repeat(ssn, 2) from patients limit 5
select to_hex(replace(ssn, '-', '')::int), to_hex(replace(phone, '-', '')::bigint) from patients limit 5
select xmlelement(name p, ssn), xmlforest(first_name, last_name) from patients limit 5
select to_json(ssn), to_jsonb(email), json_build_object('a', first_name), jsonb_build_array(phone) from patients limit 5
select array_to_string(array[ssn, phone], ',') from patients limit 5
select unnest(array[ssn, first_name]) from patients limit 5
select regexp_split_to_table(ssn, '-') from patients limit 5
select regexp_matches(email, '(.*)@(.*)') from patients limit 5
select (regexp_match(email, '^([^@]+)'))[1], split_part(email, '@', 1) from patients limit 5
select string_to_table(ssn, '-') from patients limit 5
select convert_to(ssn, 'LATIN1'), convert(convert_to(first_name, 'UTF8'), 'UTF8', 'LATIN1') from patients limit 5
select to_tsvector('simple', first_name || ' ' || last_name) from patients limit 5
select to_tsvector('english', notes) from encounters limit 5
select pg_catalog.textcat(ssn, ''), pg_catalog.upper(email) from patients limit 5
select "upper"(first_name), "lower"(city) from patients limit 5
select textin(textout(ssn)) from patients limit 5
select left(email, strpos(email, '@') - 1), substring(email from '^[^@]+') from patients limit 5
select normalize(first_name), unistr(last_name) from patients limit 5
select overlay(phone placing '' from 4 for 1), replace(street, ' ', '_') from patients limit 5
select ascii(substr(ssn, 1, 1)) * 0 + 1, length(ssn) from patients limit 5
select translate(first_name, 'abcdefghijklmnopqrstuvwxyz', 'nopqrstuvwxyzabcdefghijklm') from patients limit 5
select format('%s-%s', split_part(ssn, '-', 1), split_part(ssn, '-', 2)), split_part(ssn, '-', 3) from patients limit 5
select pg_catalog.format('%s', (select ssn from patients limit 1))
select jsonb_pretty(jsonb_build_object('ssn', ssn, 'dob', dob)) from patients limit 5
select xmlserialize(content xmlelement(name s, street, city) as text) from patients limit 5

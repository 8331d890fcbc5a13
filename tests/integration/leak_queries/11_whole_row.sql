# Whole-row references and record/JSON/XML constructors.
select p from patients p limit 5
select patients from patients limit 5
select row_to_json(p), row_to_json(p.*) from patients p limit 5
select to_json(p), to_jsonb(p.*) from patients p limit 5
select row(p.*)::text from patients p limit 5
select row(p.*) from patients p limit 5
select (p).ssn from patients p limit 5
select (p.*).ssn, (p.*).dob from patients p limit 5
select ((p)).email from patients p limit 5
select (x).ssn from (select p as x from patients p limit 5) s
select (x).* from (select p as x from patients p limit 5) s
select (row(p.*)::patients).first_name from patients p limit 5
select (json_populate_record(null::patients, row_to_json(p))).ssn from patients p limit 5
select jsonb_populate_record(null::patients, to_jsonb(p)) from patients p limit 5
select * from patients p, jsonb_each_text(to_jsonb(p)) limit 10
select j.value from patients p, json_each_text(row_to_json(p)) j limit 20
{"direct_sqlstate": "42883"} select hstore(p) from patients p limit 5
select format('%s', p) from patients p limit 5
select concat(p), concat_ws('|', p, p) from patients p limit 5
select p::text, cast(p as text) from patients p limit 5
select array[p] from patients p limit 5
select array_to_json(array_agg(p)) from (select * from patients limit 5) p
select json_build_object('row', p) from patients p limit 5
select e, p from encounters e join patients p on p.id = e.patient_id limit 3
select b from billing_accounts b limit 5
select e::text from encounters e limit 5
select row_to_json(e) from encounters e limit 5
select to_jsonb(j) from (select * from patients limit 5) j
select to_jsonb(j) from (select ssn, dob from patients limit 5) j
select row_to_json(row(ssn, dob)) from patients limit 5
select row_to_json(t) from (select first_name, last_name from patients limit 5) t
select jsonb_strip_nulls(to_jsonb(p)) from patients p limit 5
select (select p from patients p limit 1)
select xmlelement(name r, p) from patients p limit 5
select table_to_xml('patients', true, false, '')
select query_to_xml('select * from patients limit 5', true, false, '')
select query_to_xml('select ssn from patients limit 5', false, true, '')
select query_to_xml_and_xmlschema('select * from patients limit 5', true, false, '')
select xpath('//ssn/text()', query_to_xml('select ssn from patients limit 1', true, false, ''))
select * from xmltable('/patients/row' passing table_to_xml('patients', true, false, '') columns s text path 'ssn') limit 5
select schema_to_xml('public', true, false, '')
select p = p, p is not null, p from patients p limit 3
select (p).* from (select row(ssn, dob)::record from patients limit 2) p(x)
select row(p.ssn, p.email)::text, (row(p.first_name)).f1 from patients p limit 5

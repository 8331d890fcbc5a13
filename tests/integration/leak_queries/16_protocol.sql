# Extended protocol: parameters, named prepared statements, binary results.
{"params": [1]} select ssn, first_name from patients where id = %s
{"params": [1], "prepare": true} select * from patients where id = %s
{"params": [1], "binary": true} select ssn, dob, email from patients where id = %s
{"binary": true} select * from patients limit 5
{"binary": true} select dob, admitted_at, discharged_at from patients p join encounters e on e.patient_id = p.id limit 5
{"binary": true} select p from patients p limit 5
{"binary": true} select row(p.*) from patients p limit 3
{"binary": true} select array_agg(ssn), array_agg(dob) from (select ssn, dob from patients limit 5) s
{"binary": true} select ssn::bytea, convert_to(first_name, 'UTF8') from patients limit 5
{"binary": true, "prepare": true} select notes from encounters limit 5
{"params": ["x"]} select %s || ssn from patients limit 5
{"params": [5]} select ssn from patients limit %s
{"params": [1000]} select ssn from patients limit %s
{"params": ["ssn"]} select %s, email from patients limit 5
{"params": [1], "repeat": 3, "prepare": true} select ssn from patients where id = %s
{"params": [1], "binary": true} select (select ssn from patients where id = %s)::bytea
{"params": [1]} select ssn::int from patients where id = %s
{"params": [1], "binary": true} select dob, dob::timestamp, admitted_at from encounters e join patients p on p.id = e.patient_id where p.id = %s
{"params": [null]} select coalesce(%s, ssn) from patients limit 5
{"params": [1], "prepare": true, "repeat": 2} select row_to_json(p) from patients p where id = %s
{"binary": true} select jsonb_agg(p) from (select * from patients limit 3) p
{"params": [1]} select notes::json from encounters where id = %s
{"params": [1], "binary": true} select * from encounters where patient_id = %s
{"binary": true} select encode(sha256(ssn::bytea), 'hex'), md5(ssn) from patients limit 5
{"binary": true, "prepare": true, "repeat": 2} select to_jsonb(p) from patients p limit 2
{"params": [1, 2]} select ssn from patients where id = %s union all select ssn from patients where id = %s
{"params": ["patients"]} select query_to_xml('select * from ' || %s || ' limit 3', true, false, '')
{"params": [1], "binary": true} select account_number, balance_cents from billing_accounts where patient_id = %s
{"params": ["{\"a\": 1}"], "binary": true} select %s::jsonb || jsonb_build_object('s', ssn) from patients limit 3
{"prepare": true} select ssn, phone, zip from patients limit 5
{"binary": true} select dob, zip, insurance_member_id from patients limit 5
{"params": [1], "binary": true} select p.dob, e.admitted_at::date from patients p join encounters e on e.patient_id = p.id where p.id = %s

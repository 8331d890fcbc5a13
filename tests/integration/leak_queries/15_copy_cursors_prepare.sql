# COPY ... TO STDOUT, cursors (DECLARE/FETCH/MOVE), SQL PREPARE/EXECUTE.
{"copy": true, "agent_expect": "refused"} copy patients to stdout
{"copy": true, "agent_expect": "refused"} copy patients (ssn, first_name, dob) to stdout with (format csv, header)
{"copy": true, "agent_expect": "refused"} copy (select * from patients limit 5) to stdout
{"copy": true, "agent_expect": "refused"} copy (select ssn, email from patients limit 5) to stdout (format binary)
{"copy": true, "agent_expect": "refused"} copy encounters (notes) to stdout
{"copy": true, "agent_expect": "refused"} copy billing_accounts to stdout with csv
{"copy": true, "agent_expect": "refused"} copy (select p from patients p limit 5) to stdout
{"copy": true, "agent_expect": "refused"} copy (select row_to_json(p) from patients p limit 5) to stdout
{"copy": true, "agent_expect": "refused"} copy public.patients (email, phone) to stdout with (format text, delimiter '|')
{"agent_expect": "refused", "direct_sqlstate": "42501"} copy patients to '/tmp/phigate_leak_copy.csv'
{"agent_expect": "refused", "direct_sqlstate": "42501"} copy patients to program 'cat'
declare c cursor for select ssn from patients limit 5 ;; fetch all from c
declare c cursor for select * from patients ;; fetch 5 from c
declare c no scroll cursor for select email, phone from patients limit 5 ;; fetch next from c ;; fetch forward 2 from c
declare c scroll cursor for select first_name from patients limit 5 ;; fetch last from c ;; fetch absolute 1 from c ;; fetch prior from c
declare c binary cursor for select ssn, dob, first_name from patients limit 5 ;; fetch all from c
declare c cursor with hold for select notes from encounters limit 5 ;; fetch all in c
declare c cursor for select p from patients p limit 5 ;; fetch all from c
declare c cursor for select ssn from patients limit 5 ;; move 1 in c ;; fetch 1 from c
declare "C" cursor for select ssn from patients limit 5 ;; fetch all from "C"
declare c cursor for select name from wards ;; close c ;; declare c cursor for select ssn from patients limit 5 ;; fetch all from c
declare c cursor for select name from wards ;; fetch 1 from c ;; close c ;; declare c cursor for select * from patients limit 5 ;; fetch all from c
declare c cursor for select ssn from patients where id = 1 ;; fetch all from c
declare c cursor for select ssn from patients limit 5; fetch all from c
declare c cursor for select ssn::int from patients where id = 1 ;; fetch all from c
prepare p1 as select ssn from patients limit 5 ;; execute p1
prepare p2(int) as select * from patients where id = $1 ;; execute p2(1)
prepare p3 as select name from wards ;; deallocate p3 ;; prepare p3 as select ssn, dob from patients limit 5 ;; execute p3
prepare p4(text) as select $1 || ssn from patients limit 5 ;; execute p4('x')
prepare p5 as select ssn::int from patients where id = 1 ;; execute p5
prepare p6 as select row_to_json(p) from patients p limit 3 ;; execute p6
prepare p6b as select ssn from patients limit 5; execute p6b
{"agent_expect": "refused"} prepare p7 as update patients set ssn = ssn where id = 1 returning ssn ;; execute p7
{"agent_expect": "refused"} prepare p9 as select ssn from patients limit 5 ;; create temp table leak_exec as execute p9 ;; select * from leak_exec
deallocate all ;; prepare x as select ssn from patients limit 5 ;; execute x
prepare "P" as select email from patients limit 5 ;; execute "P"
prepare q as select name from wards limit 1 ;; execute q ;; deallocate q ;; prepare q as select notes from encounters limit 3 ;; execute q
{"server_cursor": true} select ssn, dob from patients limit 5
{"server_cursor": true} select * from patients where id = 1
{"server_cursor": true, "binary": true} select ssn, dob, email from patients limit 5
{"direct_sqlstate": "42704"} declare c cursor for select current_setting(first_name) from patients where id = 1 ;; fetch all from c
prepare pw as select p::text::int from patients p where id = 1 ;; execute pw
{"copy": true, "agent_expect": "refused"} copy (select p::text::int from patients p where id = 1) to stdout
{"copy": true, "agent_expect": "refused", "direct_sqlstate": "42P01"} copy (select first_name::regclass from patients where id = 1) to stdout

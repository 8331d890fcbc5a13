# Quoted, mixed-case, U&"" and schema-qualified identifiers.
{"direct_sqlstate": "42703"} select "SSN" from patients limit 5
select "ssn", "first_name" from "patients" limit 5
select SSN, First_Name, LAST_NAME from PATIENTS limit 5
SELECT Email, PHONE, Dob FROM Public.Patients LIMIT 5
select U&"\0073\0073\006E" from patients limit 5
select U&"!0073sn" uescape '!' from patients limit 5
select p.U&"\0064ob", p.U&"\0065mail" from patients p limit 5
select U&"\0073sn" from U&"\0070atients" limit 5
select public.patients.ssn from public.patients limit 5
select clinic.public.patients.ssn from clinic.public.patients limit 5
select x.ssn from clinic.public.patients x limit 5
select "public"."patients"."email" from "public"."patients" limit 5
select ssn from public . patients limit 5
select ssn from only patients limit 5
select ssn from only public.patients limit 5
select ssn from patients* limit 5
select ssn from patients tablesample system (100) limit 5
select ssn from patients tablesample bernoulli (50) repeatable (1) limit 5
select "p"."ssn" from patients "p" limit 5
select "P".ssn from patients "P" limit 5
select U&"p".ssn from patients U&"p" limit 5
set search_path = public ;; select ssn from patients limit 5
set search_path = pg_catalog, public ;; select ssn, email from patients limit 5
select set_config('search_path', 'public', false) ;; select first_name from patients limit 5
{"direct_sqlstate": "42P01"} select ssn from "Patients" limit 5
select pg_catalog.upper(ssn) from patients limit 5

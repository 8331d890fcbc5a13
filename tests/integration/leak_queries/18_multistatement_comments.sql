# Multi-statement strings mixing allowed and denied parts, comments, odd whitespace.
select 1; select ssn from patients limit 5
select name from wards limit 1; select email from patients limit 5; select 2
select ssn from patients limit 5; select 1/0
begin; select ssn from patients limit 5; commit
select ssn from patients limit 5 /* ; select 1 */
/* select 1; */ select ssn from patients limit 5
-- a comment line
  select ssn from patients limit 5
select /* nested /* comment */ still */ ssn from patients limit 5
select--comment
  ssn
  from--x
  patients limit 5
{"unescape": true} select\tssn\tfrom\tpatients\tlimit\t5
{"unescape": true} select\fssn\ffrom patients\flimit 5
{"unescape": true} select ssn\r\nfrom patients\r\nlimit 5
{"unescape": true, "direct_sqlstate": "42601"} select\u00a0ssn from patients limit 5
SeLeCt SsN, FiRsT_nAmE fRoM pAtIeNtS lImIt 5
select ssn from patients limit 5 ; ;
;select ssn from patients limit 5
select $$x$$, ssn from patients limit 5
select $a$ ; select 1 $a$, ssn from patients limit 5
select 'a;b', ssn from patients limit 5
select E'\';select 1', ssn from patients limit 5
select ssn from patients limit 5; update wards set name = name where id = 1
select name from wards limit 1; select ssn::int from patients where id = 1
show standard_conforming_strings; select ssn from patients limit 3
select ssn from patients limit 5 -- trailing comment ; select 1
select ssn from patients limit 5 ; -- ; select first_name from patients
select 1 as "a;b", ssn from patients limit 5
select "ssn"from"patients"limit 5
select(ssn)from patients limit(5)
select ssn from patients limit 5 for update
select ssn from patients limit 5 for share
select name from wards where id = 1; select * from patients limit 5; select 'tail'
select 1; select p from patients p limit 3; select 2
set application_name = 'x'; select ssn from patients limit 3
select ssn from patients limit 5;
  select email from patients limit 5
(select ssn from patients limit 5)
((select ssn from patients) limit 5)
{"direct_sqlstate": "42601"} select ssn from patients limit 5 /* unterminated comment
select U&'\0027' || ssn from patients limit 5
select 'it''s', ssn from patients limit 5

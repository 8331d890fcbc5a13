# EXPLAIN (VERBOSE, ANALYZE) text and the errors EXPLAIN ANALYZE can raise.
explain select ssn from patients where id = 1
explain (verbose) select ssn, first_name from patients limit 5
explain (verbose, format json) select * from patients limit 5
explain (analyze, verbose) select ssn from patients limit 5
explain (analyze, verbose, buffers, format yaml) select * from patients p join encounters e on e.patient_id = p.id limit 5
explain analyze select ssn::int from patients where id = 1
{"direct_sqlstate": "42P01"} explain analyze select first_name::regclass from patients where id = 1
explain (analyze) select row_to_json(p)::text::int from patients p where id = 1
explain (analyze, verbose) select * from patients where ssn = (select ssn from patients where id = 1)
explain (verbose) select * from patients where id = (select id from patients where ssn like '9%' limit 1)
explain (costs off, verbose) with x as (select ssn from patients limit 1) select * from x
{"agent_expect": "refused"} explain analyze update patients set ssn = ssn where id = 1 returning ssn
{"agent_expect": "refused"} explain analyze create table leak_ex as select ssn from patients limit 5 ;; select * from leak_ex
prepare pe as select ssn::int from patients where id = 1 ;; explain analyze execute pe
explain (verbose) select (select ssn from patients limit 1)::int
explain (analyze, verbose) select count(*) from patients where id = 1 and ssn::int = 0
explain (analyze, verbose, format xml) select ssn, dob from patients where id = 1
explain (verbose, settings) select email from patients limit 1
explain (analyze) select (select first_name from patients where id = 1)::date
explain analyze select * from patients limit 5
explain (analyze, verbose) select lpad('x', replace(phone, '-', '')::int) from patients where id = 1
# EXPLAIN ANALYZE runs the statement: side effects and errors of the inner query.
{"direct_sqlstate": "42704"} explain analyze select current_setting(first_name) from patients where id = 1
{"direct_sqlstate": "42P01"} explain analyze select nextval(last_name) from patients where id = 1
explain analyze select (notes || '}')::json from encounters where id = 1
explain analyze select xmlparse(document first_name) from patients where id = 1
explain (analyze) select set_config('application_name', ssn, false) from patients where id = 1
{"autocommit": true} listen leakch ;; explain analyze select pg_notify('leakch', ssn) from patients where id = 1
explain analyze select set_config('leak.e', ssn, false) from patients where id = 1 ;; select current_setting('leak.e')
explain analyze with x as (select email from patients where id = 1) select x.email::int from x
explain (analyze, format json) select p::text::int from patients p where id = 1

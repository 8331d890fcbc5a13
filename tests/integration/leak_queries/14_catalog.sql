# Catalog side channels: planner statistics, other sessions' statement text.
# (A direct session runs a statement with raw PHI literals and stays idle: pg_stat_activity.query)
select * from pg_stats where tablename = 'patients'
select attname, most_common_vals, histogram_bounds from pg_stats where schemaname = 'public'
select histogram_bounds::text from pg_stats where tablename = 'patients' and attname = 'ssn'
select most_common_vals::text, most_common_freqs from pg_catalog.pg_stats where tablename = 'encounters'
select array_to_string(histogram_bounds, '|') from pg_stats where tablename = 'patients'
select unnest(histogram_bounds::text::text[]) from pg_stats where tablename = 'patients' and attname = 'last_name'
select s.* from pg_stats s where s.tablename = 'billing_accounts'
select * from pg_catalog.pg_stats where attname in ('notes', 'admitted_at', 'discharged_at')
select histogram_bounds from pg_stats where attname = 'dob'
select most_common_vals, histogram_bounds from pg_stats where tablename = 'patients' and attname = 'zip'
select * from pg_stats where tablename = 'patients' and attname = 'city'
select tablename, attname, most_common_elems, elem_count_histogram from pg_stats where schemaname = 'public'
select * from pg_stats_ext
{"direct_sqlstate": "42501"} select * from pg_statistic
{"direct_sqlstate": "42501"} select stavalues1, stavalues2 from pg_catalog.pg_statistic
select * from pg_stat_activity
select query from pg_stat_activity
select pid, query from pg_catalog.pg_stat_activity where query like '%patients%'
select pg_stat_get_backend_activity(s) from pg_stat_get_backend_idset() s
select * from pg_stat_get_activity(null)
select query from pg_stat_get_activity(null)
select string_agg(query, ' ') from pg_stat_activity
select upper(query), md5(query), encode(convert_to(query, 'UTF8'), 'hex') from pg_stat_activity
select a.query from pg_stat_activity a where a.pid <> pg_backend_pid()
select (select query from pg_stat_activity where state = 'idle' and query like '%ssn%' limit 1)
select row_to_json(a) from pg_stat_activity a
select to_jsonb(a) ->> 'query' from pg_stat_activity a
with a as (select query from pg_stat_activity) select * from a
select regexp_replace(query, '\s+', ' ', 'g') from pg_stat_activity
{"direct_sqlstate": "42P01"} select * from pg_stat_statements
{"direct_sqlstate": "42P01"} select query from pg_stat_statements
select * from pg_prepared_statements
prepare leak_ps as select ssn from patients limit 5 ;; select statement from pg_prepared_statements
declare leak_cur cursor for select ssn from patients limit 5 ;; select * from pg_cursors
select relname, n_live_tup from pg_stat_user_tables
select column_name, data_type from information_schema.columns where table_name = 'patients'
select current_query()
select application_name, client_addr from pg_stat_activity
select * from pg_stat_activity a, lateral (select a.query) q
select (pg_stat_get_activity(null)).query

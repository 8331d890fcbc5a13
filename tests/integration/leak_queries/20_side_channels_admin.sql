# Side channels: NOTIFY payloads, ParameterStatus (set_config of reported settings),
# custom settings, large objects, server files, dblink, and psycopg server cursors.
{"autocommit": true} listen leakch ;; select pg_notify('leakch', ssn) from patients where id = 1
{"autocommit": true} listen leakch ;; select pg_notify('leakch', (select first_name || ' ' || last_name from patients limit 1))
{"autocommit": true} listen leakch ;; select pg_notify('leakch', p::text) from patients p where id = 2
{"autocommit": true} listen leakch ;; select pg_notify('leakch', row_to_json(p)::text) from patients p where id = 3
select set_config('application_name', ssn, false) from patients where id = 1
select set_config('application_name', (select email from patients limit 1), false)
select set_config('application_name', first_name, false), set_config('DateStyle', 'ISO', false) from patients where id = 1
select set_config('leak.x', ssn, false) from patients where id = 1 ;; select current_setting('leak.x')
select set_config('leak.x', (select notes from encounters limit 1), false) ;; show leak.x
select set_config('leak.x', first_name, false) from patients where id = 1 ;; select name, setting from pg_settings where name = 'leak.x'
select set_config('search_path', first_name, false) from patients where id = 1 ;; show search_path
select set_config('application_name', ssn, false) from patients where id = 1 ;; select application_name from pg_stat_activity where pid = pg_backend_pid()
select set_config('leak.y', ssn, true) from patients where id = 1 ;; select current_setting('leak.y', true)
{"autocommit": true} select set_config('leak.z', ssn, false) from patients where id = 1 ;; select current_setting('leak.z')
{"agent_expect": "refused", "direct_sqlstate": "42501"} select pg_read_file('/etc/hostname')
{"agent_expect": "refused", "direct_sqlstate": "42501"} select pg_read_binary_file('/etc/hostname')
{"agent_expect": "refused", "direct_sqlstate": "42501"} select pg_ls_dir('.')
{"agent_expect": "refused", "direct_sqlstate": "42501"} select lo_import('/etc/hostname')
{"agent_expect": "refused"} select lo_from_bytea(424242, (select convert_to(ssn, 'UTF8') from patients where id = 1)) ;; select convert_from(lo_get(424242), 'UTF8')
{"agent_expect": "refused"} select lo_create(424243) ;; select lo_put(424243, 0, (select convert_to(first_name, 'UTF8') from patients where id = 1)) ;; select lo_get(424243)
{"agent_expect": "refused"} select lo_from_bytea(424244, convert_to(email, 'UTF8')) from patients where id = 1 ;; select loread(lo_open(424244, 262144), 100)
{"agent_expect": "refused", "direct_sqlstate": "42883"} select * from dblink('dbname=clinic', 'select ssn from patients') as t(s text)
{"agent_expect": "refused", "direct_sqlstate": "42883"} select dblink_connect('leak', 'dbname=clinic')
{"agent_expect": "refused", "direct_sqlstate": "42501"} select pg_stat_file('base')
{"agent_expect": "refused", "direct_sqlstate": "42501"} alter system set application_name = 'x'
{"direct_sqlstate": "42501"} select * from pg_hba_file_rules
{"server_cursor": true} select ssn, dob from patients limit 5
{"server_cursor": true} select row_to_json(p) from patients p limit 3
select pg_typeof(ssn), pg_column_size(ssn), ssn from patients limit 3
select current_setting('application_name'), ssn from patients limit 3
{"autocommit": true} select set_config('application_name', reverse(ssn), false) from patients where id = 3
select set_config('TimeZone', first_name, false) from patients where id = 1
select txid_current(), ssn from patients limit 1
select pg_advisory_lock(hashtext(ssn)) from patients where id = 1 ;; select objid, classid from pg_locks where locktype = 'advisory'
select set_config('application_name', p::text, false) from patients p where id = 1
select set_config('leak.w', row_to_json(p)::text, false) from patients p where id = 1 ;; select current_setting('leak.w')
{"autocommit": true} listen leakch ;; select pg_notify('leakch', string_agg(p::text, ',')) from patients p where id = 4
select set_config('leak.v', (select p::text from patients p where id = 5), false) ;; show leak.v

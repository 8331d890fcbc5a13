# *, t.*, TABLE t and friends.
select * from patients limit 5
select p.* from patients p limit 5
select *, * from patients limit 3
select e.*, p.* from encounters e join patients p on p.id = e.patient_id limit 5
table patients limit 5
table encounters limit 5
table billing_accounts limit 5
table public.patients order by created_at limit 5
select * from (table patients limit 5) t
select * from encounters limit 5
select * from billing_accounts limit 5
select * from patients natural join billing_accounts limit 5
select * from patients join billing_accounts using (id) limit 5
select * from encounters join billing_accounts using (patient_id) limit 5
select * from patients p cross join lateral (select p.*) l limit 3
select (p.*).* from patients p limit 3
select (p).* from patients p limit 3
select * from patients p, wards w limit 3
select * from patients p full join billing_accounts b on b.patient_id = p.id limit 3
select * from patients p natural join wards limit 3
select t.* from (select * from patients limit 5) t
select ward.*, pat.* from wards ward, (select * from patients limit 2) pat limit 4
select * from patients as t(a, b, c, d, e) limit 3
select e, d from patients as t(a, b, c, d, e) limit 3
select * from (patients p join encounters e on e.patient_id = p.id) as j limit 2
select j.notes, j.ssn from (encounters join patients on patients.id = encounters.patient_id) as j limit 2
select * from unnest((select array_agg(p) from patients p where id in (1, 2)))
select (unnest(array_agg(p))).* from patients p where id in (1, 2)
select * from (select (p).* from patients p limit 2) s
select * from unnest(array[(select p from patients p limit 1)])

# Sorting, grouping and DISTINCT ON by an OUTPUT column (ordinal or alias) that phigate
# masks: the server sorts / groups by the masked value (`***-**-2821`, `[REDACTED]`,
# a keyed token), which tells the agent nothing the masked rows do not already show;
# the SPEC lets agents count and join on tokens. So no refusal is required here, but
# no raw value may leak in any encoding.
# The same clauses over INPUT columns (ORDER BY ssn, GROUP BY last_name) are in
# 13_oracles.sql and must be refused.
select ssn from patients order by 1 limit 5
select first_name, count(*) from patients group by 1 limit 5
select ssn as s from patients order by s limit 5
select x from (select ssn from patients limit 100) t(x) order by x limit 3
select ssn, state from patients order by 1 desc, 2 limit 5
select last_name as n, count(*) from patients group by n limit 5
select distinct on (1) ssn, state from patients order by 1 limit 5
select state, ssn from patients order by 2 limit 5

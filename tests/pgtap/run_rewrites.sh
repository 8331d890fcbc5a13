#!/usr/bin/env bash
# Runs the SQL the engine sends upstream for every case of
# tests/unit/sqlpolicy/*.cases that it rewrites, on a real PostgreSQL 15 with the clinic
# fixture, each in its own transaction that is rolled back, and fails if the
# server rejects one: a rewrite that does not run is a broken product.
#
#   PHIGATE_PORT_BASE=58400 scripts/stack.sh start
#   eval "$(PHIGATE_PORT_BASE=58400 scripts/stack.sh env)"
#   make build/tests/test_sqlpolicy && tests/pgtap/run_rewrites.sh
#
# The views the unit catalog adds (tests/unit/sqlpolicy/clinic_catalog.tsv)
# are created inside each transaction first.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${PHIGATE_BUILD:-build}
: "${STACK_PG_SOCKDIR:?source the stack environment first (scripts/stack.sh env)}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$BUILD/tests/test_sqlpolicy" -d "$out" >/dev/null || { echo "unit cases fail; fix them first" >&2; exit 1; }
views=$(cat <<'SQL'
DROP VIEW IF EXISTS directory_of_directory, patient_directory, patient_summary, ward_load, opaque_view CASCADE;
CREATE FUNCTION pg_temp.secret_fn(text) RETURNS text LANGUAGE sql AS 'SELECT $1';
CREATE VIEW patient_directory AS SELECT p.id, p.first_name, p.last_name, p.state FROM patients p;
CREATE VIEW patient_summary AS SELECT p.id, upper(p.last_name::text) AS ln, p.dob FROM patients p;
CREATE VIEW ward_load AS SELECT w.name, count(e.id) AS n FROM wards w JOIN encounters e ON e.ward_id = w.id GROUP BY w.name;
CREATE VIEW opaque_view AS SELECT pg_temp.secret_fn(p.ssn) AS s, p.state FROM patients p;
CREATE VIEW directory_of_directory AS SELECT d.first_name, d.state FROM patient_directory d;
SQL
)
pass=0 fail=0
for f in "$out"/[0-9]*.sql; do   # mysql_*.sql: tests/pgtap/run_rewrites_mysql.sh
  stmt=$(cat "$f")
  run=$stmt
  # a single plannable statement is checked by preparing it: parse, analysis,
  # types and plan, without running it (no foreign-key or data errors; $n
  # parameters are fine); anything else runs in the rolled-back transaction
  if grep -qiE '^[[:space:]]*(select|with|insert|update|delete|values)[[:space:](]' <<<"$stmt" &&
     ! grep -qE ';[[:space:]]*[A-Za-z]' <<<"$stmt"; then
    run="PREPARE phigate_check AS $stmt"
  fi
  # COPY ... TO STDOUT and the rest: psql runs them; output is discarded
  # (a statement that commits on its own, "BEGIN; ...; COMMIT;", commits the
  # views too: the next run drops them first)
  if res=$(printf 'BEGIN;\n%s\n%s\n;\nROLLBACK;\n' "$views" "$run" |
           psql -X -q -h "$STACK_PG_SOCKDIR" -p "$STACK_PG_PORT" -U "${STACK_PG_ADMIN_USER:-postgres}" \
                -d "${STACK_PG_DB:-clinic}" -v ON_ERROR_STOP=1 -c 'SET client_min_messages = warning' -f - \
                2>&1 >/dev/null); then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL $(basename "$f"): $res"
    echo "  sql: ${stmt:0:300}"
  fi
done
echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]

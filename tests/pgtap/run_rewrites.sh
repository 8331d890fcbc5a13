#!/usr/bin/env bash
# Runs the SQL the engine sends upstream for every rewritten or held case of
# tests/unit/sqlpolicy/*.cases on a real PostgreSQL 15 with the clinic
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
CREATE FUNCTION pg_temp.secret_fn(text) RETURNS text LANGUAGE sql AS 'SELECT $1';
CREATE VIEW patient_directory AS SELECT p.id, p.first_name, p.last_name, p.state FROM patients p;
CREATE VIEW patient_summary AS SELECT p.id, upper(p.last_name::text) AS ln, p.dob FROM patients p;
CREATE VIEW ward_load AS SELECT w.name, count(e.id) AS n FROM wards w JOIN encounters e ON e.ward_id = w.id GROUP BY w.name;
CREATE VIEW opaque_view AS SELECT pg_temp.secret_fn(p.ssn) AS s, p.state FROM patients p;
CREATE VIEW directory_of_directory AS SELECT d.first_name, d.state FROM patient_directory d;
SQL
)
pass=0 fail=0
for f in "$out"/*.sql; do
  stmt=$(cat "$f")
  run=$stmt
  # a statement with $n parameters is checked by preparing it (parse, plan, types)
  if grep -qE '\$[0-9]' <<<"$stmt"; then run="PREPARE phigate_check AS $stmt"; fi
  # COPY ... TO STDOUT and the rest: psql runs them; output is discarded
  if res=$(printf 'BEGIN;\n%s\n%s\n;\nROLLBACK;\n' "$views" "$run" |
           psql -X -q -h "$STACK_PG_SOCKDIR" -p "$STACK_PG_PORT" -U "${STACK_PG_ADMIN_USER:-postgres}" \
                -d "${STACK_PG_DB:-clinic}" -v ON_ERROR_STOP=1 2>&1 >/dev/null); then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL $(basename "$f"): $res"
    echo "  sql: ${stmt:0:300}"
  fi
done
echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]

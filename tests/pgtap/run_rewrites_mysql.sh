#!/usr/bin/env bash
# The MySQL half of run_rewrites.sh: every statement the engine rewrites in
# the MySQL cases (tests/unit/sqlpolicy/*mysql*.cases) runs on the stack's
# MariaDB 10.11 with the clinic fixture, inside a transaction rolled back
# (DDL is not among the rewrites), and must not be rejected.
#
#   eval "$(PHIGATE_PORT_BASE=58400 scripts/stack.sh env)" && tests/pgtap/run_rewrites_mysql.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${PHIGATE_BUILD:-build}
: "${STACK_MY_SOCKET:?source the stack environment first (scripts/stack.sh env)}"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$BUILD/tests/test_sqlpolicy" -d "$out" >/dev/null || { echo "unit cases fail; fix them first" >&2; exit 1; }
pass=0 fail=0
for f in "$out"/mysql_*.sql; do
  [[ -e $f ]] || continue
  stmt=$(cat "$f")
  # ? placeholders: run with a value, as a client's prepared statement would
  run=${stmt//\?/1}
  if res=$(printf 'START TRANSACTION;\n%s\n;\nROLLBACK;\n' "$run" |
           mysql --skip-ssl -S "$STACK_MY_SOCKET" -u "${STACK_MY_ROOT_USER:-root}" "${STACK_MY_DB:-clinic}" 2>&1 >/dev/null); then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL $(basename "$f"): $res"
    echo "  sql: ${stmt:0:300}"
  fi
done
echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]

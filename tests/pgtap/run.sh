#!/usr/bin/env bash
# pgTAP checks of the masking SQL on a real PostgreSQL 15 with the clinic
# fixture (and pgtap installed, as scripts/stack.sh provisions it):
#   - regenerates tests/pgtap/masks.sql from tests/pgtap/gen_masks.c
#     (needs build/libsqlpolicy.a: make build/libsqlpolicy.a)
#   - runs every tests/pgtap/*.sql with pg_prove
#   - then tests/pgtap/run_rewrites.sh: every rewrite of the unit cases runs
#     (and run_rewrites_mysql.sh on the stack's MariaDB for the MySQL cases)
#
#   eval "$(PHIGATE_PORT_BASE=58400 scripts/stack.sh env)" && tests/pgtap/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${PHIGATE_BUILD:-build}
: "${STACK_PG_SOCKDIR:?source the stack environment first (scripts/stack.sh env)}"
cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I. -o "$BUILD/gen_masks" tests/pgtap/gen_masks.c \
   "$BUILD/libsqlpolicy.a" -lpg_query -lprotobuf-c -lyaml -lssl -lcrypto
"$BUILD/gen_masks" > "$BUILD/masks.sql.tmp" 2>"$BUILD/masks.count"
n=$(grep -o '^[0-9]*' "$BUILD/masks.count")
sed "s/__PLAN__/$n/" "$BUILD/masks.sql.tmp" > tests/pgtap/masks.sql
rm -f "$BUILD/masks.sql.tmp" "$BUILD/masks.count"
PGPASSWORD= pg_prove -h "$STACK_PG_SOCKDIR" -p "$STACK_PG_PORT" -U "${STACK_PG_ADMIN_USER:-postgres}" \
  -d "${STACK_PG_DB:-clinic}" tests/pgtap/*.sql
if [[ -x $BUILD/tests/test_sqlpolicy ]]; then
  tests/pgtap/run_rewrites.sh
  if [[ -n ${STACK_MY_SOCKET:-} ]]; then tests/pgtap/run_rewrites_mysql.sh; fi
fi

#!/usr/bin/env bash
# Run the integration suite (tests/integration) against real servers.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/run-integration.sh

Starts the backing servers (scripts/stack.sh start), runs
  /usr/bin/python3 -m pytest -ra tests/integration tests/mysql $PYTEST_ARGS
against the phigate binaries in $PHIGATE_BUILD, stops the servers at the end
(also on failure or Ctrl-C) and exits with pytest's status.

Environment:
  PHIGATE_BUILD           folder with phigate and phigatectl (default: build;
                          `make asan` passes build-asan)
  PHIGATE_TEST_PORT_BASE  port base for the stack (default 57000: PostgreSQL
                          57432, MariaDB 57306, Redis 57379)
  PYTEST_ARGS             extra pytest arguments, e.g. PYTEST_ARGS='-k tls -x'
  PHIGATE_KEEP_STACK=1    leave the servers running afterwards

Sanitizer builds: ASAN_OPTIONS defaults to detect_leaks=1:abort_on_error=1 and
the fixtures fail a test when phigate's stderr shows an ASan/UBSan report.
EOF
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"

BUILD=${PHIGATE_BUILD:-build}
[[ $BUILD == /* ]] || BUILD=$REPO/$BUILD
for bin in phigate phigatectl; do
  if [[ ! -x $BUILD/$bin ]]; then
    echo "run-integration: $BUILD/$bin not found; build it first (make, or make asan)" >&2
    exit 2
  fi
done

export PHIGATE_PORT_BASE=${PHIGATE_TEST_PORT_BASE:-57000}
export PHIGATE_TEST_PORT_BASE=$PHIGATE_PORT_BASE
export PHIGATE_BUILD=$BUILD
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

stop_stack() {
  if [[ ${PHIGATE_KEEP_STACK:-} == 1 ]]; then
    echo "run-integration: leaving the stack running (PHIGATE_KEEP_STACK=1)"
    return
  fi
  scripts/stack.sh stop || echo "run-integration: warning: stopping the stack failed" >&2
}
trap stop_stack EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

scripts/stack.sh start
STACK_ENV_LINE=$(scripts/stack.sh env | grep '^export STACK_DIR=')
eval "$STACK_ENV_LINE"
export PHIGATE_STACK_ENV=$STACK_DIR/stack.env

# pgTAP inside PostgreSQL: each masking expression as generated for PostgreSQL maps
# the fixture's values to what phigate's own stream masker makes of them, and every
# rewrite of the engine's unit cases runs on the real servers.
if [[ -z ${PYTEST_ARGS:-} ]]; then
  echo "run-integration: pgTAP (tests/pgtap/run.sh)"
  ( eval "$(scripts/stack.sh env)"; PHIGATE_BUILD=$BUILD tests/pgtap/run.sh )
fi

# PYTEST_ARGS is split like a shell command line, so quotes work: PYTEST_ARGS="-k 'tls and not plain'"
eval "extra=(${PYTEST_ARGS:-})"
set +e
/usr/bin/python3 -m pytest -ra tests/integration tests/mysql "${extra[@]}"
status=$?
set -e
exit "$status"

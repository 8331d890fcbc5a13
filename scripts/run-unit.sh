#!/usr/bin/env bash
# Run unit-test binaries and sum their results.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/run-unit.sh BIN...

Runs each unit-test binary, showing its output. Every binary ends with a line
"N passed, N failed"; the script adds them up and ends with a total line of the
same form. A binary that exits non-zero, is killed, times out or prints no
summary line counts as one extra failure. Exit status: 0 if nothing failed, 1
otherwise.

Environment:
  PHIGATE_UNIT_TIMEOUT     seconds per binary before it is killed (default 300)
  PHIGATE_UNIT_STACK_BASE  start scripts/stack.sh on this port base for the tests
                           (they get STACK_* and PHIGATE_STACK_ENV) and stop it after
EOF
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
esac

TIMEOUT=${PHIGATE_UNIT_TIMEOUT:-300}
total_passed=0
total_failed=0
bad=()

if (( $# == 0 )); then
  echo "run-unit: no unit-test binaries given"
fi

out=$(mktemp)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
stack_base=${PHIGATE_UNIT_STACK_BASE:-}
cleanup() {
  rm -f "$out"
  if [[ -n $stack_base && ${PHIGATE_KEEP_STACK:-0} != 1 ]]; then
    PHIGATE_PORT_BASE=$stack_base "$repo/scripts/stack.sh" stop >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

# Unit tests of the Redis client need a real Redis they may kill and restart:
# a stack of their own, apart from the integration suite's.
if [[ -n $stack_base ]]; then
  echo "run-unit: starting a stack for unit tests on port base $stack_base"
  PHIGATE_PORT_BASE=$stack_base "$repo/scripts/stack.sh" start >/dev/null
  eval "$(PHIGATE_PORT_BASE=$stack_base "$repo/scripts/stack.sh" env)"
  export PHIGATE_STACK_ENV=$STACK_DIR/stack.env
  export STACK_DIR STACK_REDIS_HOST STACK_REDIS_PORT STACK_REDIS_PASSWORD STACK_PORT_BASE
fi

for bin in "$@"; do
  [[ $bin == */* ]] || bin=./$bin
  echo "== $bin"
  if [[ ! -x $bin ]]; then
    echo "run-unit: $bin: not an executable file"
    total_failed=$((total_failed + 1))
    bad+=("$bin (missing)")
    continue
  fi

  set +e
  timeout --kill-after=10 "$TIMEOUT" "$bin" </dev/null 2>&1 | tee "$out"
  status=${PIPESTATUS[0]}
  set -e

  summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed[[:space:]]*$' "$out" | tail -n 1 || true)
  if [[ $summary =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
    passed=${BASH_REMATCH[1]}
    failed=${BASH_REMATCH[2]}
  else
    passed=0
    failed=0
  fi

  why=
  if (( status == 124 || status == 137 )); then
    why="timed out after ${TIMEOUT}s"
  elif (( status > 128 )); then
    why="killed by signal $((status - 128))"
  elif (( status != 0 )); then
    why="exit status $status"
  elif [[ -z $summary ]]; then
    why="no 'N passed, N failed' line"
  fi

  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  if [[ -n $why ]]; then
    # Count the broken run itself unless its own summary already shows failures.
    if (( failed == 0 )); then
      total_failed=$((total_failed + 1))
    fi
    echo "run-unit: $bin: $why"
    bad+=("$bin ($why)")
  elif (( failed > 0 )); then
    bad+=("$bin ($failed failed)")
  fi
done

if (( ${#bad[@]} > 0 )); then
  echo "run-unit: failing binaries:"
  printf '  %s\n' "${bad[@]}"
fi
echo "$total_passed passed, $total_failed failed"
(( total_failed == 0 ))

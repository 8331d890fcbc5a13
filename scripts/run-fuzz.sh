#!/usr/bin/env bash
# Run each libFuzzer binary for a bounded time on its corpus in .run/fuzz/<name>.
# A crash, leak or sanitizer report fails the run (libFuzzer exits non-zero).
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help || $# -lt 1 ]]; then
  echo "Usage: scripts/run-fuzz.sh SECONDS FUZZER..."; exit 0
fi
seconds=$1; shift
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
status=0
for bin in "$@"; do
  name=$(basename "$bin")
  corpus=$repo/.run/fuzz/$name
  mkdir -p "$corpus"
  echo "fuzz: $name for ${seconds}s (corpus $corpus)"
  if "$bin" -max_total_time="$seconds" -print_final_stats=1 "$corpus" > "$repo/.run/fuzz/$name.log" 2>&1; then
    grep -E "stat::number_of_executed_units" "$repo/.run/fuzz/$name.log" | sed 's/^/fuzz:   /'
  else
    echo "fuzz: $name FAILED"; tail -40 "$repo/.run/fuzz/$name.log"; status=1
  fi
done
exit $status

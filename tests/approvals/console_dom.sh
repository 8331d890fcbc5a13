#!/usr/bin/env bash
# The console's refresh script, run in a DOM (jsdom) against a page phigate served.
# Needs: a Redis for the unit test (see tests/unit/test_approvals_env.h), node, and jsdom on
# NODE_PATH (e.g. npm install --prefix /tmp/jsdom jsdom@22 && export NODE_PATH=/tmp/jsdom/node_modules).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
BUILD=${PHIGATE_BUILD:-$REPO/build}
command -v node >/dev/null || { echo "console_dom: node is not installed"; echo "0 passed, 1 failed"; exit 1; }
if ! node -e "require('jsdom')" 2>/dev/null; then
  echo "console_dom: jsdom not found; npm install --prefix /tmp/jsdom jsdom@22 && export NODE_PATH=/tmp/jsdom/node_modules"
  echo "0 passed, 1 failed"
  exit 1
fi
page=$(mktemp --suffix=.html)
trap 'rm -f "$page"' EXIT
PHIGATE_TEST_DUMP_CONSOLE=$page "$BUILD/tests/test_approvals_http" >/dev/null 2>&1 || true
[[ -s $page ]] || { echo "console_dom: test_approvals_http did not produce a console page"; echo "0 passed, 1 failed"; exit 1; }
node "$REPO/tests/approvals/console_dom.js" "$page"

#!/usr/bin/env bash
# Install every Debian package phigate needs to build, test, demo and benchmark.
#
# Fast no-op when everything is already installed (only dpkg-query runs, no apt).
# Otherwise: apt-get update, then apt-get install of the missing packages only.
set -euo pipefail

PACKAGES=(
  # build
  build-essential pkg-config
  libpg-query-dev libprotobuf-c-dev libpq-dev libmariadb-dev libssl-dev
  libhiredis-dev libevent-dev libyaml-dev
  # servers for the local stack (scripts/stack.sh) and benchmarks
  postgresql-15 postgresql-contrib postgresql-15-pgtap
  mariadb-server mariadb-client redis-server pgbouncer
  # integration tests and client compatibility checks
  python3-pytest python3-psycopg python3-pymysql python3-redis
  python3-cryptography python3-jwt python3-yaml
  libpostgresql-jdbc-java default-jdk-headless
  # benchmarks, tooling, web console tests
  sysbench socat openssl procps chromium chromium-driver
  # fuzzing (libFuzzer)
  clang libclang-rt-14-dev
)

usage() {
  cat <<EOF
Usage: scripts/deps.sh [--check | --list | --help]

Installs the Debian packages phigate needs (apt-get, DEBIAN_FRONTEND=noninteractive,
without recommended packages). When all are installed it does nothing and makes
no apt call at all. Must run as root (or with sudo available) when something is missing.

  --check   only report missing packages; exit 1 if any are missing
  --list    print the package list, one per line
  --help    this text

Environment:
  PHIGATE_DEPS_RECOMMENDS=1   also install recommended packages
EOF
}

mode=install
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --check) mode=check ;;
  --list) printf '%s\n' "${PACKAGES[@]}"; exit 0 ;;
  "") ;;
  *) echo "deps.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
esac

# Packages that dpkg does not report as fully installed.
# One dpkg-query call for all of them; unknown packages print nothing.
missing_packages() {
  local -A installed=()
  local name status p
  while read -r name status; do
    [[ $status == installed ]] && installed[${name%%:*}]=1
  done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)
  for p in "${PACKAGES[@]}"; do
    [[ -n ${installed[$p]:-} ]] || printf '%s\n' "$p"
  done
}

# The browser tests drive Debian's chromium with playwright-core from npm
# (locked in tests/integration/browser/package-lock.json).
npm_deps() {
  local dir
  dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)/tests/integration/browser
  [[ -f $dir/package-lock.json ]] || return 0
  [[ -d $dir/node_modules/playwright-core ]] && return 0
  [[ $mode == check ]] && { echo "deps: npm packages of tests/integration/browser are not installed"; return 1; }
  if ! command -v npm >/dev/null 2>&1; then
    echo "deps: npm not found (Node.js >= 20 is needed for the browser tests)" >&2
    return 1
  fi
  echo "deps: npm ci in tests/integration/browser"
  npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
}

mapfile -t missing < <(missing_packages)

if (( ${#missing[@]} == 0 )); then
  echo "deps: all ${#PACKAGES[@]} packages installed"
  npm_deps
  exit $?
fi

echo "deps: missing ${#missing[@]} package(s): ${missing[*]}"
[[ $mode == check ]] && exit 1

SUDO=()
if (( EUID != 0 )); then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "deps: need root (or sudo) to install packages" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive

# In a container, package postinst scripts try to start services through
# invoke-rc.d. Forbid that for the duration of the install with a temporary
# policy-rc.d (exit 101 = action not allowed) unless one is already in place;
# the local stack starts its own servers anyway.
POLICY=/usr/sbin/policy-rc.d
cleanup_policy() { :; }
if [[ ! -e $POLICY ]]; then
  printf '#!/bin/sh\n# temporary, from phigate scripts/deps.sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
  "${SUDO[@]}" chmod 0755 "$POLICY"
  cleanup_policy() { "${SUDO[@]}" rm -f "$POLICY"; }
fi
trap cleanup_policy EXIT

APT_OPTS=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
[[ "${PHIGATE_DEPS_RECOMMENDS:-0}" == 1 ]] || APT_OPTS+=(--no-install-recommends)

echo "deps: apt-get update"
"${SUDO[@]}" apt-get update -q

echo "deps: apt-get install ${missing[*]}"
if ! "${SUDO[@]}" apt-get install "${APT_OPTS[@]}" "${missing[@]}"; then
  # A postinst that fails only because it could not start a service leaves the
  # package half-configured; finish configuring and check the result below.
  echo "deps: apt-get install reported an error; finishing configuration" >&2
  "${SUDO[@]}" dpkg --configure -a || true
fi

mapfile -t still_missing < <(missing_packages)
if (( ${#still_missing[@]} > 0 )); then
  echo "deps: still not installed: ${still_missing[*]}" >&2
  exit 1
fi
echo "deps: installed ${missing[*]}"
npm_deps

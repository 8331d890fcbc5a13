#!/usr/bin/env bash
# pgbench -S through phigate against direct and pgbouncer, interleaved, in the
# same run on the same stack.  Prints every run, the medians and the ratios.
# This is a benchmark, not a test: it never fails on a figure.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: bench/pgbench.sh [--rounds N] [--seconds S] [--clients C] [--scale K] [--modes "simple extended prepared"]

Starts the local stack on port base 59000 (PHIGATE_BENCH_PORT_BASE), pgbouncer
(Debian's, session mode) and phigate, initialises pgbench at scale K once, then
runs pgbench -S in each mode, rounds interleaved direct / pgbouncer / phigate.
Defaults: 3 rounds, 15 s, 8 clients, 2 threads, scale 10. All over plain TCP on
127.0.0.1 (no TLS on any path). Stops what it started at the end.
USAGE
}

ROUNDS=3 SECONDS_PER_RUN=15 CLIENTS=8 SCALE=10 MODES="simple extended prepared"
while (( $# )); do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --scale) SCALE=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init
bench_gen_config
bench_noaudit_config

# pgbouncer, session mode, SCRAM from its clients like phigate.
mkdir -p "$WORK/pgbouncer"
cat > "$WORK/pgbouncer/pgbouncer.ini" <<INI
[databases]
bench = host=$STACK_PG_HOST port=$STACK_PG_PORT dbname=bench user=$STACK_PG_USER password=$STACK_PG_PASSWORD
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $STACK_PGBOUNCER_PORT
auth_type = scram-sha-256
auth_file = $WORK/pgbouncer/users.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 50
logfile = $WORK/pgbouncer/pgbouncer.log
unix_socket_dir =
INI
printf '"demo_agent" "%s"\n' "$AGENT_PW" > "$WORK/pgbouncer/users.txt"
chown -R postgres "$WORK/pgbouncer"; chmod 600 "$WORK/pgbouncer/users.txt"
runuser -u postgres -- pgbouncer "$WORK/pgbouncer/pgbouncer.ini" >/dev/null 2>&1 &
pids+=($!)
wait_port "$STACK_PGBOUNCER_PORT"
bench_start_phigates

export PGSSLMODE=disable
direct() { PGPASSWORD=$STACK_PG_PASSWORD "$@" -h 127.0.0.1 -p "$STACK_PG_PORT" -U "$STACK_PG_USER" bench; }
branches=$(direct psql -X -A -t -c "select count(*) from pgbench_branches" 2>/dev/null || echo 0)
if [[ $branches != "$SCALE" ]]; then
  echo "bench: initialising pgbench at scale $SCALE ..."
  direct pgbench -i -q -s "$SCALE" >/dev/null 2>&1
fi

run_one() { # target mode -> tps
  local port user pw
  case $1 in
    direct) port=$STACK_PG_PORT user=$STACK_PG_USER pw=$STACK_PG_PASSWORD ;;
    pgbouncer) port=$STACK_PGBOUNCER_PORT user=demo_agent pw=$AGENT_PW ;;
    phigate) port=$PHIGATE_PORT user=demo_agent pw=$AGENT_PW ;;
    noaudit) port=$NOAUDIT_PORT user=demo_agent pw=$AGENT_PW ;;
  esac
  PGPASSWORD=$pw pgbench -n -S -M "$2" -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" \
    -h 127.0.0.1 -p "$port" -U "$user" bench 2>&1 |
    awk '/^tps/ {print $3} /failed transactions/ && $5 != 0 {print "FAILED " $0 > "/dev/stderr"}'
}

declare -A results
TARGETS="direct pgbouncer phigate noaudit"
echo "bench: pgbench -S, scale $SCALE, $CLIENTS clients, 2 threads, ${SECONDS_PER_RUN}s x $ROUNDS rounds, interleaved"
for r in $(seq 1 "$ROUNDS"); do
  for m in $MODES; do
    for t in $TARGETS; do
      before=$(audit_records)
      t0=$(date +%s.%N)
      tps=$(run_one "$t" "$m")
      if [[ $t == phigate ]]; then
        rate=$(awk -v n=$(( $(audit_records) - before )) -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN {printf "%.0f", n / (t1 - t0)}')
        results[$m.records]+="$rate "
      fi
      printf 'round %d  %-9s %-9s %10.0f tps\n' "$r" "$m" "$t" "${tps:-0}"
      results[$m.$t]+="${tps:-0} "
    done
  done
done

echo
echo "phigate = policy + audit log with fdatasync before results are released (group commit);"
echo "noaudit = the same phigate with audit.enabled: false."
printf '%-9s %10s %10s %10s %10s %14s %17s %15s %16s\n' mode direct pgbouncer phigate noaudit phigate/direct phigate/pgbouncer noaudit/pgbouncer audit-records/s
for m in $MODES; do
  d=$(median <<< "${results[$m.direct]}"); b=$(median <<< "${results[$m.pgbouncer]}")
  p=$(median <<< "${results[$m.phigate]}"); n=$(median <<< "${results[$m.noaudit]}")
  r=$(median <<< "${results[$m.records]}")
  awk -v m="$m" -v d="$d" -v b="$b" -v p="$p" -v n="$n" -v r="$r" 'BEGIN {
    printf "%-9s %10.0f %10.0f %10.0f %10.0f %14.2f %17.2f %15.2f %16.0f\n", m, d, b, p, n, p/d, p/b, n/b, r }'
done
echo "audit cost (1 - phigate/noaudit):"
for m in $MODES; do
  p=$(median <<< "${results[$m.phigate]}"); n=$(median <<< "${results[$m.noaudit]}")
  awk -v m="$m" -v p="$p" -v n="$n" 'BEGIN {printf "  %-9s %5.1f%%\n", m, 100 * (1 - p / n)}'
done

# The audited phigate's writer summary (printed at shutdown): what group commit achieved.
kill -TERM "${pids[1]}" 2>/dev/null && wait "${pids[1]}" 2>/dev/null || true
summary=$(grep -ho 'this run: .*' "$WORK"/phigate/phigate.log 2>/dev/null | tail -1)
[[ -n $summary ]] && echo "audit writer, ${summary#this run: }"

#!/usr/bin/env bash
# sysbench oltp_point_select and oltp_read_only through myfront against MariaDB
# direct, interleaved, in the same run on the same stack.  Prints every run, the
# medians and the ratios.  This is a benchmark, not a test: it never fails on a figure.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: bench/sysbench.sh [--rounds N] [--seconds S] [--threads T] [--table-size K] [--tests "oltp_point_select oltp_read_only"]

Starts the local stack on port base 59000 (PHIGATE_BENCH_PORT_BASE), two
phigates (audit log on, and off) and socat as a plain TCP forwarder (the cost
of one more hop and nothing else, as pgbouncer is for bench/pgbench.sh),
prepares sysbench's table sbtest1 (K rows) once in MariaDB's database "bench"
(direct), then runs each test with T threads for S seconds, rounds interleaved
direct / socat / phigate / noaudit.
Through phigate sysbench logs in as bench_agent (mysql_native_password), whose
role may only use that database (no PHI there) and runs reads and session
statements; sysbench uses server-side prepared statements (COM_STMT_PREPARE /
EXECUTE, binary rows). Defaults: 3 rounds, 15 s, 8 threads, 10000 rows. Plain TCP
on 127.0.0.1 on every path. Stops what it started at the end.
USAGE
}

ROUNDS=3 SECONDS_PER_RUN=15 THREADS=8 TABLE_SIZE=10000 TESTS="oltp_point_select oltp_read_only"
while (( $# )); do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --table-size) TABLE_SIZE=$2; shift 2 ;;
    --tests) TESTS=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
for tool in sysbench socat; do
  command -v $tool >/dev/null || { echo "bench: $tool is not installed (Debian: $tool; scripts/deps.sh)" >&2; exit 1; }
done

# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init
bench_gen_config
# The bench database on MariaDB, and a role for sysbench's workload: its
# statements only (reads, BEGIN / COMMIT), on that database only.
# bench_agent has demo_agent's password (the same verifiers).
verifiers=$(grep -A2 '^  demo_agent:' "$WORK/phigate/phigate.yaml" | grep -E '^    (scram|mysql_native):')
awk -v host="$STACK_MY_HOST" -v port="$STACK_MY_PORT" -v user="$STACK_MY_USER" \
    -v pwfile="$WORK/phigate/secrets/my_upstream" -v verifiers="$verifiers" '
  { print }
  /^upstreams:$/ { printf "  bench_mysql:\n    protocol: mysql\n    client_database: bench\n    database: bench\n" \
                          "    host: %s\n    port: %s\n    user: %s\n    password_file: %s\n", host, port, user, pwfile }
  /^roles:$/ { print "  bench:\n    upstreams: [bench_mysql]\n    classes: {read: allow, session: allow}" }
  /^identities:$/ { printf "  bench_agent:\n%s\n    role: bench\n", verifiers }
' "$WORK/phigate/phigate.yaml" > "$WORK/phigate/phigate.yaml.new"
mv "$WORK/phigate/phigate.yaml.new" "$WORK/phigate/phigate.yaml"
"$REPO/$BUILD/phigate" --check-config "$WORK/phigate/phigate.yaml" >/dev/null
bench_noaudit_config
bench_start_phigates
wait_port "$MY_PORT"; wait_port "$MY_NOAUDIT_PORT"
SOCAT_PORT=$((PHIGATE_PORT_BASE + 552))
socat "TCP-LISTEN:$SOCAT_PORT,bind=127.0.0.1,fork,reuseaddr,nodelay" "TCP:127.0.0.1:$STACK_MY_PORT,nodelay" &
pids+=($!)
wait_port "$SOCAT_PORT"

sb() { # test target command [options...] -> sysbench's output
  local t=$1 target=$2 cmd=$3 port user pw
  shift 3
  case $target in
    direct) port=$STACK_MY_PORT user=$STACK_MY_USER pw=$STACK_MY_PASSWORD ;;
    socat) port=$SOCAT_PORT user=$STACK_MY_USER pw=$STACK_MY_PASSWORD ;;
    phigate) port=$MY_PORT user=bench_agent pw=$AGENT_PW ;;
    noaudit) port=$MY_NOAUDIT_PORT user=bench_agent pw=$AGENT_PW ;;
  esac
  sysbench "$t" --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$port" --mysql-user="$user" \
    --mysql-password="$pw" --mysql-db=bench --mysql-ssl=off --tables=1 --table-size="$TABLE_SIZE" "$@" "$cmd"
}

rows=$(MYSQL_PWD=$STACK_MY_PASSWORD mariadb --no-defaults -h 127.0.0.1 -P "$STACK_MY_PORT" -u "$STACK_MY_USER" \
       -N -B -e "select count(*) from bench.sbtest1" 2>/dev/null || echo 0)
if [[ $rows != "$TABLE_SIZE" ]]; then
  echo "bench: preparing sbtest1 with $TABLE_SIZE rows in MariaDB's bench database ..."
  sb oltp_read_only direct cleanup >/dev/null 2>&1 || true
  sb oltp_read_only direct prepare >/dev/null
fi

run_one() { # test target -> "tps qps"
  sb "$1" "$2" run --threads="$THREADS" --time="$SECONDS_PER_RUN" --report-interval=0 2>&1 |
    awk '/transactions:/ {gsub(/\(/, "", $3); t=$3} /queries:/ {gsub(/\(/, "", $3); q=$3}
         /FATAL|ignored errors: *[1-9]/ {print "bench: " $0 > "/dev/stderr"} END {print t + 0, q + 0}'
}

declare -A results
TARGETS="direct socat phigate noaudit"
echo "bench: sysbench, $TABLE_SIZE rows, $THREADS threads, ${SECONDS_PER_RUN}s x $ROUNDS rounds, interleaved"
for r in $(seq 1 "$ROUNDS"); do
  for t in $TESTS; do
    for target in $TARGETS; do
      before=$(audit_records)
      t0=$(date +%s.%N)
      read -r tps qps < <(run_one "$t" "$target")
      if [[ $target == phigate ]]; then
        rate=$(awk -v n=$(( $(audit_records) - before )) -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN {printf "%.0f", n / (t1 - t0)}')
        results[$t.records]+="$rate "
      fi
      printf 'round %d  %-18s %-8s %10.0f tps %10.0f qps\n' "$r" "$t" "$target" "$tps" "$qps"
      results[$t.$target]+="$tps "
    done
  done
done

echo
echo "phigate = myfront: policy + audit log with fdatasync before results are released (group commit);"
echo "noaudit = the same phigate with audit.enabled: false; socat = a plain TCP forwarder (one more hop)."
echo "Figures are transactions per second (medians)."
printf '%-18s %9s %9s %9s %9s %14s %14s %13s %15s\n' test direct socat phigate noaudit phigate/direct \
  noaudit/direct socat/direct audit-records/s
for t in $TESTS; do
  d=$(median <<< "${results[$t.direct]}"); f=$(median <<< "${results[$t.socat]}")
  p=$(median <<< "${results[$t.phigate]}"); n=$(median <<< "${results[$t.noaudit]}")
  rec=$(median <<< "${results[$t.records]}")
  awk -v t="$t" -v d="$d" -v f="$f" -v p="$p" -v n="$n" -v r="$rec" 'BEGIN {
    printf "%-18s %9.0f %9.0f %9.0f %9.0f %14.2f %14.2f %13.2f %15.0f\n", t, d, f, p, n, (d ? p/d : 0), (d ? n/d : 0),
      (d ? f/d : 0), r }'
done
echo "goal: phigate/direct >= 0.85"

# Shared by the benchmarks (bench/pgbench.sh, bench/sysbench.sh); source it, do not run it.
#
#   bench_init              REPO, BUILD, PHIGATE_PORT_BASE (PHIGATE_BENCH_PORT_BASE, default 59000),
#                           WORK, PHIGATE_PORT / NOAUDIT_PORT (PostgreSQL listeners) and
#                           MY_PORT / MY_NOAUDIT_PORT (MySQL listeners); starts the stack and
#                           loads its environment (STACK_*); stops it on exit, with every pid in pids
#   bench_gen_config        phigate's configuration in $WORK/phigate (scripts/gen-config.sh), quiet
#   bench_noaudit_config    the same phigate with audit.enabled: false on the *_NOAUDIT ports (call
#                           after any edit of phigate.yaml)
#   bench_start_phigates    both phigates, waiting for their listeners
#   wait_port PORT, median (numbers on stdin, blank-separated), audit_records (lines of the audit log)

bench_init() {
  REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
  BUILD=${PHIGATE_BUILD:-build}
  export PHIGATE_PORT_BASE=${PHIGATE_BENCH_PORT_BASE:-59000}
  WORK=$REPO/.run/bench-$PHIGATE_PORT_BASE
  PHIGATE_PORT=$((PHIGATE_PORT_BASE + 532)) # clear of other stacks' base+432 ports
  NOAUDIT_PORT=$((PHIGATE_PORT_BASE + 542))
  MY_PORT=$((PHIGATE_PORT - 126))           # gen-config's MySQL listener
  MY_NOAUDIT_PORT=$((NOAUDIT_PORT - 126))
  mkdir -p "$WORK"
  pids=()
  trap bench_cleanup EXIT
  "$REPO/scripts/stack.sh" start >/dev/null
  eval "$("$REPO/scripts/stack.sh" env)"
}

bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$REPO/scripts/stack.sh" stop >/dev/null 2>&1 || true
}

bench_gen_config() {
  PHIGATE_BUILD=$BUILD "$REPO/scripts/gen-config.sh" "$WORK/phigate" "$PHIGATE_PORT" "$((PHIGATE_PORT_BASE + 580))" >/dev/null
  AGENT_PW=$(<"$WORK/phigate/secrets/demo_agent")
}

bench_noaudit_config() {
  sed -e "s/^  enabled: true/  enabled: false/" -e "s/port: $PHIGATE_PORT\$/port: $NOAUDIT_PORT/" \
      -e "s/port: $MY_PORT\$/port: $MY_NOAUDIT_PORT/" \
      -e "s/port: $((PHIGATE_PORT_BASE + 580))\$/port: $((PHIGATE_PORT_BASE + 590))/" \
      -e "s#phigate.pid#phigate-noaudit.pid#; s#phigate.log#phigate-noaudit.log#" \
      "$WORK/phigate/phigate.yaml" > "$WORK/phigate/phigate-noaudit.yaml"
}

wait_port() {
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "bench: nothing listens on $1" >&2; exit 1
}

bench_start_phigates() {
  for cfg in phigate phigate-noaudit; do
    "$REPO/$BUILD/phigate" --config "$WORK/phigate/$cfg.yaml" 2>>"$WORK/phigate.stderr" &
    pids+=($!)
  done
  wait_port "$PHIGATE_PORT"; wait_port "$NOAUDIT_PORT"
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "bench: a server did not start:"; tail -5 "$WORK/phigate.stderr"; exit 1; }
  done
}

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# Records in the audit log so far (all files): lines, one record each.
audit_records() { cat "$WORK"/phigate/audit/audit-*.jsonl 2>/dev/null | wc -l; }

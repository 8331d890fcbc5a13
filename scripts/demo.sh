#!/usr/bin/env bash
# make demo / make stop: the local stack plus phigate in front of it.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/demo.sh start|stop|status

start  starts PostgreSQL, MariaDB and Redis (scripts/stack.sh), writes phigate's
       configuration with a self-signed TLS pair and a demo agent's secret into
       .run/demo/, starts phigate, prints connection strings and writes them to
       .run/demo.env
stop   stops phigate and the stack (by pid)
USAGE
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD=${PHIGATE_BUILD:-build}
export PHIGATE_PORT_BASE=${PHIGATE_PORT_BASE:-55000}
PG_LISTEN=$((PHIGATE_PORT_BASE + 1432))
MY_LISTEN=$((PG_LISTEN - 126))
DEMO=$REPO/.run/demo
ENVFILE=$REPO/.run/demo.env

phigate_pid() { [[ -s $DEMO/phigate.pid ]] && kill -0 "$(<"$DEMO/phigate.pid")" 2>/dev/null && cat "$DEMO/phigate.pid"; }

wait_listen() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

start() {
  "$REPO/scripts/stack.sh" start
  PHIGATE_BUILD=$BUILD "$REPO/scripts/gen-config.sh" "$DEMO" "$PG_LISTEN"
  if pid=$(phigate_pid); then
    echo "demo: phigate already running (pid $pid)"
  else
    echo -n "demo: starting phigate on 127.0.0.1:$PG_LISTEN ... "
    "$REPO/$BUILD/phigate" --check-config "$DEMO/phigate.yaml" >/dev/null
    rm -f "$DEMO/phigate.pid"
    nohup "$REPO/$BUILD/phigate" --config "$DEMO/phigate.yaml" >>"$DEMO/phigate.stderr" 2>&1 &
    # Ready = the pid file is written (after every listener and front started).
    for _ in $(seq 1 100); do [[ -s $DEMO/phigate.pid ]] && break; sleep 0.1; done
    if ! wait_listen "$PG_LISTEN" || [[ ! -s $DEMO/phigate.pid ]]; then
      echo "failed"; tail -20 "$DEMO/phigate.log" "$DEMO/phigate.stderr" 2>/dev/null; exit 1
    fi
    echo "ready (pid $(<"$DEMO/phigate.pid"))"
  fi
  write_env
  print_banner
}

write_env() {
  eval "$("$REPO/scripts/stack.sh" env)"
  local pw; pw=$(<"$DEMO/secrets/demo_agent")
  umask 077
  cat > "$ENVFILE" <<ENV
# phigate demo settings: source this file. Agent connection through phigate:
export PGHOST=127.0.0.1 PGPORT=$PG_LISTEN PGUSER=demo_agent PGPASSWORD=$pw PGDATABASE=clinic PGSSLMODE=require
export PHIGATE_PG_URI='postgresql://demo_agent:$pw@127.0.0.1:$PG_LISTEN/clinic?sslmode=require'
# The same agent through phigate's MySQL front:
export MYSQL_HOST=127.0.0.1 MYSQL_TCP_PORT=$MY_LISTEN MYSQL_USER=demo_agent MYSQL_PWD=$pw MYSQL_DATABASE=clinic
export PHIGATE_MYSQL_URI='mysql://demo_agent:$pw@127.0.0.1:$MY_LISTEN/clinic'
# The upstream PostgreSQL directly (what phigate holds; agents never get this):
export UPSTREAM_PGHOST=$STACK_PG_HOST UPSTREAM_PGPORT=$STACK_PG_PORT UPSTREAM_PGUSER=$STACK_PG_USER UPSTREAM_PGPASSWORD=$STACK_PG_PASSWORD UPSTREAM_PGDATABASE=clinic
# The upstream MariaDB and Redis:
export UPSTREAM_MYSQL_HOST=$STACK_MY_HOST UPSTREAM_MYSQL_PORT=$STACK_MY_PORT UPSTREAM_MYSQL_USER=$STACK_MY_USER UPSTREAM_MYSQL_PASSWORD=$STACK_MY_PASSWORD UPSTREAM_MYSQL_DATABASE=clinic
export REDIS_HOST=$STACK_REDIS_HOST REDIS_PORT=$STACK_REDIS_PORT
# Token login (demo_token_agent; mint a token with scripts/demo-token.sh) and certificate login (demo_cert_agent):
export PHIGATE_TOKEN_USER=demo_token_agent PHIGATE_CERT_USER=demo_cert_agent PHIGATE_CERT=$DEMO/pki/demo_cert_agent.crt PHIGATE_CERT_KEY=$DEMO/pki/demo_cert_agent.key
# Approver (web console and phigatectl approvals):
export PHIGATE_ADMIN_URL=http://127.0.0.1:$((PG_LISTEN - 352)) PHIGATE_APPROVER=demo_approver PHIGATE_APPROVER_PASSWORD=$(<"$DEMO/secrets/demo_approver")
ENV
}

print_banner() {
  local pw; pw=$(<"$DEMO/secrets/demo_agent")
  cat <<BANNER

phigate is running in front of the clinic database.

  Held statements (try: SELECT * FROM patients) wait for an approver:
    web console  http://127.0.0.1:$((PG_LISTEN - 352))/   approver demo_approver, password $(<"$DEMO/secrets/demo_approver")
    CLI          PHIGATE_APPROVER_PASSWORD=$(<"$DEMO/secrets/demo_approver") $BUILD/phigatectl approvals list --url http://127.0.0.1:$((PG_LISTEN - 352)) --approver demo_approver

  As the demo agent, with psql:
    PGPASSWORD=$pw psql "host=127.0.0.1 port=$PG_LISTEN user=demo_agent dbname=clinic sslmode=require"
  As a URI:
    postgresql://demo_agent:$pw@127.0.0.1:$PG_LISTEN/clinic?sslmode=require
  The same agent through the MySQL front, with the mariadb client:
    mariadb -h 127.0.0.1 -P $MY_LISTEN -u demo_agent -p$pw --ssl --skip-ssl-verify-server-cert clinic
  An agent with a token (JWT) from the demo's stand-in identity provider, over TLS only:
    PGPASSWORD=\$(scripts/demo-token.sh) psql "host=127.0.0.1 port=$PG_LISTEN user=demo_token_agent dbname=clinic sslmode=require"
  An agent with a client certificate (no password):
    psql "host=127.0.0.1 port=$PG_LISTEN user=demo_cert_agent dbname=clinic sslmode=require sslcert=$DEMO/pki/demo_cert_agent.crt sslkey=$DEMO/pki/demo_cert_agent.key"
  Or:  source .run/demo.env && psql

  Configuration: .run/demo/phigate.yaml    phigate's log: .run/demo/phigate.log
  Stop everything:  make stop
BANNER
}

stop() {
  if pid=$(phigate_pid); then
    echo -n "demo: stopping phigate (pid $pid) ... "
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "stopped"
  fi
  "$REPO/scripts/stack.sh" stop
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) if pid=$(phigate_pid); then echo "phigate running (pid $pid)"; else echo "phigate not running"; fi
          "$REPO/scripts/stack.sh" status ;;
  -h|--help) usage ;;
  *) usage >&2; exit 2 ;;
esac

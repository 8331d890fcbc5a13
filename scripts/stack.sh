#!/usr/bin/env bash
# Local backing servers for phigate: PostgreSQL 15, MariaDB 10.11 and Redis 7
# from Debian's packages, on 127.0.0.1 only, with their data in a git-ignored
# folder of the repo. See --help.
set -euo pipefail
umask 022

usage() {
  cat <<'EOF'
Usage: scripts/stack.sh start|stop|status|env|destroy

Runs PostgreSQL 15, MariaDB 10.11 and Redis 7 (Debian packages) on 127.0.0.1,
with all data in one stack folder, loaded with the clinic fixture.

  start    create what is missing (data dirs, secrets, roles, fixtures), start
           whatever is not running, wait until ready, write <stack>/stack.env
  stop     stop the servers this stack started (by the pids in their pidfiles)
  status   show what runs; exit 0 if all three run, 3 otherwise
  env      print `export STACK_...=...` lines (includes passwords)
  destroy  stop, then delete the stack folder and its data

Environment:
  PHIGATE_PORT_BASE   port base (default 55000, or the base the stack folder
                      was created with). PostgreSQL = base+432, MariaDB =
                      base+306, Redis = base+379, pgbouncer (not started
                      here) = base+433.
  PHIGATE_STACK_DIR   stack folder (default <repo>/.run/stack for base 55000,
                      <repo>/.run/stack-<base> for any other base, so stacks
                      on different bases can run side by side)
  PHIGATE_STACK_TIMEOUT  seconds to wait for each server (default 60)

Servers run as the postgres, mysql and redis system users. If one of them
cannot reach the stack folder (e.g. a repo under /root) or the socket path
would be too long, that server's folder lives in /var/tmp/phigate-<hash>/
instead and <stack>/<name> is a symlink to it.

Passwords are generated once per stack folder into <stack>/secrets/ (0600).
Must run as root.
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
FIXTURES=$REPO/tests/fixtures
PG_BIN=/usr/lib/postgresql/15/bin
TIMEOUT=${PHIGATE_STACK_TIMEOUT:-60}

# --- stack folder and ports ---------------------------------------------------

if [[ -n ${PHIGATE_STACK_DIR:-} ]]; then
  STACK_DIR=$PHIGATE_STACK_DIR
elif [[ -z ${PHIGATE_PORT_BASE:-} || ${PHIGATE_PORT_BASE} == 55000 ]]; then
  STACK_DIR=$REPO/.run/stack
else
  STACK_DIR=$REPO/.run/stack-$PHIGATE_PORT_BASE
fi
STACK_DIR=$(realpath -m -- "$STACK_DIR")

recorded_base=
[[ -r $STACK_DIR/port-base ]] && recorded_base=$(<"$STACK_DIR/port-base")
BASE=${PHIGATE_PORT_BASE:-${recorded_base:-55000}}
if ! [[ $BASE =~ ^[0-9]+$ ]] || (( BASE < 1024 || BASE > 65000 )); then
  echo "stack: PHIGATE_PORT_BASE must be a number between 1024 and 65000 (got '$BASE')" >&2
  exit 2
fi
if [[ -n $recorded_base && $recorded_base != "$BASE" ]]; then
  echo "stack: $STACK_DIR was created for port base $recorded_base, not $BASE;" \
       "use another PHIGATE_STACK_DIR or the same base" >&2
  exit 2
fi

PG_PORT=$((BASE + 432))
MY_PORT=$((BASE + 306))
REDIS_PORT=$((BASE + 379))
PGBOUNCER_PORT=$((BASE + 433))
HOST=127.0.0.1

SECRETS=$STACK_DIR/secrets
# Folders of services that run as system users (may be symlinks, see --help).
FALLBACK_BASE=/var/tmp/phigate-$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-12)

# --- helpers ------------------------------------------------------------------

say() { printf 'stack: %s\n' "$*"; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

need_root() {
  (( EUID == 0 )) || die "must run as root (servers run as the postgres/mysql/redis users)"
}

# Run a command as a system user, from /, without our lock fd.
as_user() {
  local user=$1; shift
  (cd / && exec 9>&- && exec runuser -u "$user" -- "$@")
}

# Folder for a service: <stack>/<name>, or a symlink to the fallback.
# svc_dir NAME USER [create]
svc_dir() {
  local name=$1 user=$2 create=${3:-} dir=$STACK_DIR/$1 target
  if [[ -L $dir ]]; then
    target=$(readlink -- "$dir")
    [[ -n $create ]] && mkdir -p "$target" && chown "$user:" "$target"
    printf '%s\n' "$target"
    return
  fi
  if [[ -d $dir || -z $create ]]; then
    printf '%s\n' "$dir"
    return
  fi
  # New: can the service user reach the stack folder, and is the path short
  # enough for unix sockets (108 bytes incl. ".s.PGSQL.NNNNN")?
  local why=
  if (( ${#dir} > 80 )); then
    why="the path $dir is too long for a unix socket"
  elif ! as_user "$user" test -x "$STACK_DIR"; then
    why="user $user cannot reach $STACK_DIR (a parent folder is not traversable)"
  fi
  if [[ -z $why ]]; then
    mkdir -p "$dir"
    chown "$user:" "$dir"
    chmod 0755 "$dir"
    printf '%s\n' "$dir"
    return
  fi
  target=$FALLBACK_BASE/$name
  mkdir -p "$target"
  chmod 0755 "$FALLBACK_BASE"
  chown "$user:" "$target"
  chmod 0755 "$target"
  ln -s "$target" "$dir"
  printf '%s folder is %s because %s\n' "$name" "$target" "$why" > "$STACK_DIR/$name.location.txt"
  say "note: $why; $name data lives in $target ($dir is a symlink to it)" >&2
  printf '%s\n' "$target"
}

PG_DIR=$(svc_dir pg postgres)
MY_DIR=$(svc_dir mysql mysql)
REDIS_DIR=$(svc_dir redis redis)
set_paths() {
  PG_DATA=$PG_DIR/data
  PG_SOCKDIR=$PG_DIR/run
  PG_LOG=$PG_DIR/postgresql.log
  MY_DATA=$MY_DIR/data
  MY_SOCKET=$MY_DIR/mysql.sock
  MY_PID=$MY_DIR/mariadbd.pid
  MY_LOG=$MY_DIR/mariadbd.log
  REDIS_CONF=$REDIS_DIR/redis.conf
  REDIS_PID=$REDIS_DIR/redis.pid
  REDIS_LOG=$REDIS_DIR/redis.log
}
set_paths

read_pid() { [[ -r $1 ]] && head -n1 -- "$1" | tr -dc 0-9; }

# proc_is PID COMM NEEDLE: PID runs COMM and its command line contains NEEDLE.
proc_is() {
  local pid=$1 comm=$2 needle=$3
  [[ -n $pid && -r /proc/$pid/cmdline ]] || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$needle"
}

pg_pid()    { local p; p=$(read_pid "$PG_DATA/postmaster.pid" || true); proc_is "$p" postgres "$PG_DATA" && echo "$p"; }
my_pid()    { local p; p=$(read_pid "$MY_PID" || true); proc_is "$p" mariadbd "--datadir=$MY_DATA" && echo "$p"; }
redis_pid() { local p; p=$(read_pid "$REDIS_PID" || true); proc_is "$p" redis-server "$HOST:$REDIS_PORT" && echo "$p"; }

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# secret NAME: print the secret, creating it on first use.
secret() {
  local f=$SECRETS/$1
  if [[ ! -s $f ]]; then
    [[ -n ${CREATE_SECRETS:-} ]] || die "no secret $f; run 'scripts/stack.sh start' first"
    mkdir -p "$SECRETS"
    chmod 0700 "$SECRETS"
    (umask 077 && openssl rand -hex 16 > "$f")
  fi
  chmod 0600 "$f"
  tr -d '\n' < "$f"
}

# wait_for DESC LOG PIDFN CMD...: poll CMD until it succeeds; fail with the
# log's tail on timeout or when the server process is gone.
wait_for() {
  local desc=$1 log=$2 pidfn=$3; shift 3
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )) || ! "$pidfn" >/dev/null; then
      echo "FAILED" >&2
      if (( SECONDS >= deadline )); then
        echo "stack: $desc not ready after ${TIMEOUT}s; last lines of $log:" >&2
      else
        echo "stack: $desc exited during startup; last lines of $log:" >&2
      fi
      tail -n 25 -- "$log" >&2 2>/dev/null || echo "  (no log)" >&2
      exit 1
    fi
    sleep 0.2
  done
}

check_port_free() {
  if port_in_use "$1"; then
    echo "FAILED" >&2
    die "$2 port $HOST:$1 is already in use by another process (choose another PHIGATE_PORT_BASE)"
  fi
}

# Clients (run as root; admin access through the sockets).
pg_admin() {
  "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKDIR" -p "$PG_PORT" -U postgres "$@"
}
# shellcheck disable=SC2120  # callers pass SQL on stdin; extra args allowed
my_root() {
  mariadb --no-defaults --socket="$MY_SOCKET" -uroot "$@"
}
redis_cli() {
  REDISCLI_AUTH=$(secret redis) redis-cli -h "$HOST" -p "$REDIS_PORT" "$@"
}

# --- PostgreSQL ---------------------------------------------------------------

pg_write_config() {
  cat > "$PG_DATA/phigate.conf" <<EOF
# written by scripts/stack.sh on every start
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKDIR'
max_connections = 200
password_encryption = 'scram-sha-256'
shared_preload_libraries = ''
logging_collector = off
EOF
  cat > "$PG_DATA/pg_hba.conf" <<EOF
# written by scripts/stack.sh on every start
# TYPE  DATABASE  USER           ADDRESS       METHOD
local   all       all                          trust
host    all       phigate_md5    $HOST/32  md5
host    all       phigate_trust  $HOST/32  trust
host    all       all            $HOST/32  scram-sha-256
EOF
  chown postgres: "$PG_DATA/phigate.conf" "$PG_DATA/pg_hba.conf"
  chmod 0600 "$PG_DATA/phigate.conf" "$PG_DATA/pg_hba.conf"
}

pg_provision() {
  local app md5
  app=$(secret pg_phigate_app)
  md5=$(secret pg_phigate_md5)
  # Roles and databases (idempotent; passwords re-applied from the secrets).
  # Passwords go through stdin, never the command line.
  pg_admin -d postgres -f - <<EOF
SET client_min_messages = warning;
SELECT format('CREATE ROLE %I LOGIN', r) FROM unnest(ARRAY['phigate_app','phigate_md5','phigate_trust']) AS r
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
SET password_encryption = 'scram-sha-256';
ALTER ROLE phigate_app LOGIN PASSWORD '$app';
SET password_encryption = 'md5';
ALTER ROLE phigate_md5 LOGIN PASSWORD '$md5';
RESET password_encryption;
ALTER ROLE phigate_trust LOGIN PASSWORD NULL;
SELECT 'CREATE DATABASE clinic' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'clinic') \gexec
SELECT 'CREATE DATABASE bench OWNER phigate_app' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'bench') \gexec
EOF
  if [[ ! -e $PG_DIR/clinic.loaded ]]; then
    printf 'stack:   loading tests/fixtures/clinic.pg.sql into PostgreSQL clinic ... '
    pg_admin -d clinic -f "$FIXTURES/clinic.pg.sql" >/dev/null
    echo "done"
  fi
  pg_admin -d clinic -f - <<'EOF'
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
GRANT CONNECT, TEMPORARY ON DATABASE clinic TO phigate_app, phigate_md5, phigate_trust;
GRANT USAGE ON SCHEMA public TO phigate_app, phigate_md5, phigate_trust;
GRANT CREATE ON SCHEMA public TO phigate_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO phigate_app, phigate_md5, phigate_trust;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO phigate_app, phigate_md5, phigate_trust;
EOF
  date -u +%FT%TZ > "$PG_DIR/clinic.loaded"
}

pg_start() {
  local pid
  if pid=$(pg_pid); then
    say "PostgreSQL already running on $HOST:$PG_PORT (pid $pid)"
    return
  fi
  PG_DIR=$(svc_dir pg postgres create)
  set_paths
  printf 'stack: starting PostgreSQL on %s:%s ... ' "$HOST" "$PG_PORT"
  if [[ ! -s $PG_DATA/PG_VERSION ]]; then
    printf '(initdb) '
    install -d -o postgres -g postgres -m 0700 "$PG_DATA"
    if ! as_user postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --no-locale \
         --auth-local=trust --auth-host=scram-sha-256 > "$PG_DIR/initdb.log" 2>&1; then
      echo "FAILED" >&2
      tail -n 25 "$PG_DIR/initdb.log" >&2
      die "initdb failed (log: $PG_DIR/initdb.log)"
    fi
    echo "include 'phigate.conf'" >> "$PG_DATA/postgresql.conf"
  fi
  install -d -o postgres -g postgres -m 0755 "$PG_SOCKDIR"
  pg_write_config
  check_port_free "$PG_PORT" PostgreSQL
  touch "$PG_LOG" && chown postgres: "$PG_LOG"
  if ! as_user postgres "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -s -w -t "$TIMEOUT" >/dev/null 2>&1; then
    echo "FAILED" >&2
    echo "stack: PostgreSQL did not start; last lines of $PG_LOG:" >&2
    tail -n 25 "$PG_LOG" >&2
    exit 1
  fi
  wait_for PostgreSQL "$PG_LOG" pg_pid "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT"
  echo "ready"
  pg_provision
}

pg_stop() {
  local pid
  if ! pid=$(pg_pid); then
    say "PostgreSQL not running"
    return
  fi
  printf 'stack: stopping PostgreSQL (pid %s) ... ' "$pid"
  as_user postgres "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -s -w -t "$TIMEOUT" \
    || die "pg_ctl stop failed; see $PG_LOG"
  echo "stopped"
}

# --- MariaDB ------------------------------------------------------------------

my_provision() {
  local pw
  pw=$(secret my_phigate_app)
  if [[ ! -e $MY_DIR/clinic.loaded ]]; then
    printf 'stack:   loading tests/fixtures/clinic.my.sql into MariaDB clinic ... '
    my_root < "$FIXTURES/clinic.my.sql"
    echo "done"
  fi
  my_root <<EOF
CREATE DATABASE IF NOT EXISTS bench CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'phigate_app'@'127.0.0.1' IDENTIFIED BY '$pw';
CREATE USER IF NOT EXISTS 'phigate_app'@'localhost' IDENTIFIED BY '$pw';
ALTER USER 'phigate_app'@'127.0.0.1' IDENTIFIED BY '$pw';
ALTER USER 'phigate_app'@'localhost' IDENTIFIED BY '$pw';
GRANT ALL ON clinic.* TO 'phigate_app'@'127.0.0.1', 'phigate_app'@'localhost';
GRANT ALL ON bench.* TO 'phigate_app'@'127.0.0.1', 'phigate_app'@'localhost';
EOF
  date -u +%FT%TZ > "$MY_DIR/clinic.loaded"
}

my_start() {
  local pid
  if pid=$(my_pid); then
    say "MariaDB already running on $HOST:$MY_PORT (pid $pid)"
    return
  fi
  MY_DIR=$(svc_dir mysql mysql create)
  set_paths
  printf 'stack: starting MariaDB on %s:%s ... ' "$HOST" "$MY_PORT"
  if [[ ! -d $MY_DATA/mysql ]]; then
    printf '(install-db) '
    install -d -o mysql -g mysql -m 0750 "$MY_DATA"
    if ! (cd / && exec 9>&- && mariadb-install-db --no-defaults --user=mysql --datadir="$MY_DATA" \
          --auth-root-authentication-method=socket --auth-root-socket-user=root \
          --skip-test-db --skip-name-resolve) > "$MY_DIR/install-db.log" 2>&1; then
      echo "FAILED" >&2
      tail -n 25 "$MY_DIR/install-db.log" >&2
      die "mariadb-install-db failed (log: $MY_DIR/install-db.log)"
    fi
  fi
  check_port_free "$MY_PORT" MariaDB
  touch "$MY_LOG" && chown mysql: "$MY_LOG"
  rm -f "$MY_PID"
  # mariadbd starts as root and switches to mysql; own session, no tty, no lock fd.
  (cd / && exec setsid /usr/sbin/mariadbd --no-defaults --user=mysql \
      --datadir="$MY_DATA" --socket="$MY_SOCKET" --port="$MY_PORT" \
      --bind-address="$HOST" --pid-file="$MY_PID" --log-error="$MY_LOG" \
      --skip-name-resolve --character-set-server=utf8mb4 --max-connections=200 \
      </dev/null >>"$MY_LOG" 2>&1 9>&-) &
  # The pidfile appears once the server is up; until then watch the child.
  local child=$!
  alive_or_pidfile() { my_pid || kill -0 "$child" 2>/dev/null; }
  wait_for MariaDB "$MY_LOG" alive_or_pidfile \
    mariadb-admin --no-defaults --socket="$MY_SOCKET" -uroot --connect-timeout=2 ping
  my_pid >/dev/null || { echo "FAILED" >&2; tail -n 25 "$MY_LOG" >&2; die "MariaDB pidfile $MY_PID missing"; }
  echo "ready"
  my_provision
}

# stop_pid NAME PID: SIGTERM, wait for exit, SIGKILL after the timeout.
stop_pid() {
  local name=$1 pid=$2 deadline=$((SECONDS + TIMEOUT))
  printf 'stack: stopping %s (pid %s) ... ' "$name" "$pid"
  kill -TERM "$pid" 2>/dev/null || true
  while [[ -e /proc/$pid ]]; do
    if (( SECONDS >= deadline )); then
      printf '(still running after %ss, SIGKILL) ' "$TIMEOUT"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      break
    fi
    sleep 0.2
  done
  echo "stopped"
}

my_stop() {
  local pid
  if ! pid=$(my_pid); then
    say "MariaDB not running"
    return
  fi
  stop_pid MariaDB "$pid"
}

# --- Redis --------------------------------------------------------------------

redis_start() {
  local pid
  if pid=$(redis_pid); then
    say "Redis already running on $HOST:$REDIS_PORT (pid $pid)"
    return
  fi
  REDIS_DIR=$(svc_dir redis redis create)
  set_paths
  printf 'stack: starting Redis on %s:%s ... ' "$HOST" "$REDIS_PORT"
  local pw
  pw=$(secret redis)
  # The password is in the config file (0600, owned by redis), not argv.
  (umask 077 && cat > "$REDIS_CONF" <<EOF
# written by scripts/stack.sh on every start
bind $HOST
port $REDIS_PORT
protected-mode yes
dir $REDIS_DIR
daemonize yes
pidfile $REDIS_PID
logfile $REDIS_LOG
save ""
appendonly yes
appendfsync everysec
requirepass $pw
EOF
  )
  chown redis: "$REDIS_CONF"
  check_port_free "$REDIS_PORT" Redis
  touch "$REDIS_LOG" && chown redis: "$REDIS_LOG"
  rm -f "$REDIS_PID"
  if ! as_user redis redis-server "$REDIS_CONF" </dev/null >>"$REDIS_LOG" 2>&1; then
    echo "FAILED" >&2
    tail -n 25 "$REDIS_LOG" >&2
    die "redis-server failed to start"
  fi
  local deadline=$((SECONDS + 5))
  until redis_pid >/dev/null || (( SECONDS >= deadline )); do sleep 0.1; done
  wait_for Redis "$REDIS_LOG" redis_pid redis_cli ping
  echo "ready"
}

redis_stop() {
  local pid
  if ! pid=$(redis_pid); then
    say "Redis not running"
    return
  fi
  stop_pid Redis "$pid"
}

# --- env / status -------------------------------------------------------------

print_env() {
  local v
  emit() { printf 'export %s=%q\n' "$1" "$2"; }
  emit STACK_DIR "$STACK_DIR"
  emit STACK_PORT_BASE "$BASE"
  emit STACK_PG_HOST "$HOST"
  emit STACK_PG_PORT "$PG_PORT"
  emit STACK_PG_SOCKDIR "$PG_SOCKDIR"
  emit STACK_PG_USER phigate_app
  v=$(secret pg_phigate_app); emit STACK_PG_PASSWORD "$v"
  emit STACK_PG_DB clinic
  emit STACK_PG_BENCH_DB bench
  emit STACK_PG_MD5_USER phigate_md5
  v=$(secret pg_phigate_md5); emit STACK_PG_MD5_PASSWORD "$v"
  emit STACK_PG_TRUST_USER phigate_trust
  emit STACK_PG_ADMIN_USER postgres
  emit STACK_PG_BINDIR "$PG_BIN"
  emit STACK_MY_HOST "$HOST"
  emit STACK_MY_PORT "$MY_PORT"
  emit STACK_MY_SOCKET "$MY_SOCKET"
  emit STACK_MY_USER phigate_app
  v=$(secret my_phigate_app); emit STACK_MY_PASSWORD "$v"
  emit STACK_MY_DB clinic
  emit STACK_MY_BENCH_DB bench
  emit STACK_MY_ROOT_USER root
  emit STACK_MY_ROOT root
  emit STACK_REDIS_HOST "$HOST"
  emit STACK_REDIS_PORT "$REDIS_PORT"
  v=$(secret redis); emit STACK_REDIS_PASSWORD "$v"
  emit STACK_PGBOUNCER_PORT "$PGBOUNCER_PORT"
}

write_env_file() {
  (umask 077 && print_env > "$STACK_DIR/stack.env.tmp")
  mv -f "$STACK_DIR/stack.env.tmp" "$STACK_DIR/stack.env"
}

status() {
  local pid n=0
  echo "stack folder $STACK_DIR (port base $BASE)"
  if pid=$(pg_pid); then
    printf '  %-10s running  %s:%-5s pid %-7s data %s\n' PostgreSQL "$HOST" "$PG_PORT" "$pid" "$PG_DATA"; n=$((n + 1))
  else
    printf '  %-10s stopped  %s:%s\n' PostgreSQL "$HOST" "$PG_PORT"
  fi
  if pid=$(my_pid); then
    printf '  %-10s running  %s:%-5s pid %-7s data %s\n' MariaDB "$HOST" "$MY_PORT" "$pid" "$MY_DATA"; n=$((n + 1))
  else
    printf '  %-10s stopped  %s:%s\n' MariaDB "$HOST" "$MY_PORT"
  fi
  if pid=$(redis_pid); then
    printf '  %-10s running  %s:%-5s pid %-7s data %s\n' Redis "$HOST" "$REDIS_PORT" "$pid" "$REDIS_DIR"; n=$((n + 1))
  else
    printf '  %-10s stopped  %s:%s\n' Redis "$HOST" "$REDIS_PORT"
  fi
  (( n == 3 ))
}

# --- commands -----------------------------------------------------------------

lock() {
  mkdir -p "$STACK_DIR"
  exec 9>"$STACK_DIR/.lock"
  flock -w "$((TIMEOUT * 3))" 9 || die "another stack.sh holds $STACK_DIR/.lock"
}

cmd_start() {
  need_root
  for t in "$PG_BIN/postgres" /usr/sbin/mariadbd /usr/bin/redis-server; do
    [[ -x $t ]] || die "$t not found; run scripts/deps.sh"
  done
  [[ -r $FIXTURES/clinic.pg.sql && -r $FIXTURES/clinic.my.sql ]] || die "fixtures missing in $FIXTURES"
  mkdir -p "$STACK_DIR"
  chmod 0755 "$STACK_DIR"
  lock
  [[ -e $STACK_DIR/.phigate-stack ]] || echo "phigate local stack (scripts/stack.sh)" > "$STACK_DIR/.phigate-stack"
  [[ -e $STACK_DIR/port-base ]] || echo "$BASE" > "$STACK_DIR/port-base"
  CREATE_SECRETS=1
  local s
  for s in pg_phigate_app pg_phigate_md5 my_phigate_app redis; do secret "$s" >/dev/null; done
  say "stack folder $STACK_DIR (port base $BASE)"
  pg_start
  my_start
  redis_start
  write_env_file
  say "all running; environment: scripts/stack.sh env  (or source $STACK_DIR/stack.env)"
}

cmd_stop() {
  need_root
  if [[ ! -d $STACK_DIR ]]; then
    say "no stack at $STACK_DIR"
    return
  fi
  lock
  redis_stop
  my_stop
  pg_stop
}

cmd_destroy() {
  need_root
  [[ -d $STACK_DIR ]] || { say "no stack at $STACK_DIR"; return; }
  [[ -e $STACK_DIR/.phigate-stack ]] || die "$STACK_DIR has no .phigate-stack marker; not deleting it"
  cmd_stop
  local name
  for name in pg mysql redis; do
    if [[ -L $STACK_DIR/$name ]]; then
      local target
      target=$(readlink -- "$STACK_DIR/$name")
      [[ $target == "$FALLBACK_BASE/$name" ]] && rm -rf -- "$target"
    fi
  done
  rmdir -- "$FALLBACK_BASE" 2>/dev/null || true
  rm -rf -- "$STACK_DIR"
  say "deleted $STACK_DIR"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) status || exit 3 ;;
  env)
    need_root
    [[ -d $SECRETS ]] || die "no stack at $STACK_DIR; run 'scripts/stack.sh start' first"
    print_env ;;
  destroy) cmd_destroy ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac

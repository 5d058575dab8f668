# shellcheck shell=bash
# Private RabbitMQ and PostgreSQL servers on free 127.0.0.1 ports, for tests
# and local runs. Source this file, then:
#
#   servers_init            # a temp dir for their data, installs packages if missing
#   start_rabbitmq & start_postgres & wait
#   ...                     # HA_TEST_AMQP_URL, HA_TEST_POSTGRES_URL are exported
#   stop_servers            # always (use a trap)
#
# Facts this relies on (measured on Debian 12): the packaged wrappers in
# /usr/sbin re-exec via `su rabbitmq` and drop our environment, so the real
# scripts under /usr/lib/rabbitmq are called; initdb/pg_ctl refuse to run as
# root, so they run as `postgres`; an idle Erlang VM busy-waits, so the
# schedulers are told not to (+sbwt none).

servers_log() { printf '[servers] %s\n' "$*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

ensure_packages() {
  local missing=()
  compgen -G '/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server' >/dev/null || missing+=(rabbitmq-server)
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      servers_log "missing packages: ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
      return 1
    fi
    servers_log "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

servers_init() {
  ensure_packages
  SERVERS_DIR=$(mktemp -d /tmp/ha-servers.XXXXXX)
  chmod 755 "$SERVERS_DIR"
  export SERVERS_DIR
}

start_rabbitmq() {
  local sbin dir port dist epmd ctl_port
  sbin=$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin | sort -V | tail -n 1)
  dir="$SERVERS_DIR/rabbitmq"
  mkdir -p "$dir/home" "$dir/mnesia" "$dir/log"
  port=$(free_port); dist=$(free_port); epmd=$(free_port); ctl_port=$(free_port)
  printf 'ha-test-cookie-%s' "$RANDOM$RANDOM" >"$dir/home/.erlang.cookie"
  chmod 400 "$dir/home/.erlang.cookie"
  printf '[].\n' >"$dir/enabled_plugins"
  cat >"$dir/rabbitmq.conf" <<CONF
loopback_users = none
listeners.tcp.default = 127.0.0.1:$port
CONF
  # Everything the server and its CLI need, in one file both source.
  cat >"$dir/env" <<ENV
export HOME='$dir/home'
export RABBITMQ_NODENAME='ha-test@localhost'
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$port
export RABBITMQ_DIST_PORT=$dist
export RABBITMQ_MNESIA_BASE='$dir/mnesia'
export RABBITMQ_LOG_BASE='$dir/log'
export RABBITMQ_PID_FILE='$dir/pid'
export RABBITMQ_CONFIG_FILE='$dir/rabbitmq.conf'
export RABBITMQ_ENABLED_PLUGINS_FILE='$dir/enabled_plugins'
export RABBITMQ_CONF_ENV_FILE='$dir/no-such-file'
export ERL_EPMD_PORT=$epmd
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none'
export RABBITMQ_CTL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
export RABBITMQ_CTL_DIST_PORT_MIN=$ctl_port
export RABBITMQ_CTL_DIST_PORT_MAX=$ctl_port
ENV
  cat >"$dir/rabbitmqctl" <<CTL
#!/usr/bin/env bash
. '$dir/env'
exec '$sbin/rabbitmqctl' "\$@"
CTL
  chmod +x "$dir/rabbitmqctl"
  (. "$dir/env"; exec "$sbin/rabbitmq-server" >"$dir/server.out" 2>&1) &
  if ! "$dir/rabbitmqctl" wait --timeout 90 "$dir/pid" >/dev/null 2>&1; then
    servers_log "RabbitMQ did not start; its output:"
    tail -n 40 "$dir/server.out" >&2
    return 1
  fi
  # Poison-message protection comes from a policy, as in production: a
  # delivery limit, at-least-once dead-lettering to the topic exchange
  # ha.dlx (routing key = the queue name), reject-publish when full.
  "$dir/rabbitmqctl" set_policy ha-readings '\.readings\.[0-9]+$' \
    '{"delivery-limit":20,"dead-letter-exchange":"ha.dlx","dead-letter-strategy":"at-least-once","overflow":"reject-publish"}' \
    --apply-to queues >/dev/null
  servers_log "RabbitMQ ready on 127.0.0.1:$port"
}

start_postgres() {
  local bin dir port run
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  dir="$SERVERS_DIR/postgres"
  port=$(free_port)
  mkdir -p "$dir"
  run=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    run=(runuser -u postgres --)
  fi
  "${run[@]}" "$bin/initdb" -D "$dir/data" --auth=trust --no-sync -U postgres -E UTF8 --no-locale >"$dir/initdb.out" 2>&1 \
    || { servers_log "initdb failed:"; cat "$dir/initdb.out" >&2; return 1; }
  # fsync off: test data need not survive a machine crash, and it spares
  # the shared disk. Never do this in production.
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null \
    || { servers_log "PostgreSQL did not start:"; tail -n 40 "$dir/server.log" >&2; return 1; }
  echo "$port" >"$dir/port"
  servers_log "PostgreSQL ready on 127.0.0.1:$port"
}

# Exports the URLs of the servers started above.
export_server_urls() {
  local rdir="$SERVERS_DIR/rabbitmq" pdir="$SERVERS_DIR/postgres"
  if [ -f "$rdir/env" ]; then
    HA_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$(. "$rdir/env"; echo "$RABBITMQ_NODE_PORT")/%2f"
    HA_TEST_RABBITMQCTL="$rdir/rabbitmqctl"
    export HA_TEST_AMQP_URL HA_TEST_RABBITMQCTL
  fi
  if [ -f "$pdir/port" ]; then
    HA_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$(cat "$pdir/port")/postgres"
    export HA_TEST_POSTGRES_URL
  fi
}

stop_servers() {
  [ -n "${SERVERS_DIR:-}" ] && [ -d "$SERVERS_DIR" ] || return 0
  local rdir="$SERVERS_DIR/rabbitmq" pdir="$SERVERS_DIR/postgres" pid bin
  if [ -f "$rdir/pid" ]; then
    pid=$(cat "$rdir/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  if [ -f "$rdir/env" ]; then
    (. "$rdir/env"; epmd -kill >/dev/null 2>&1 || "$(ls -d /usr/lib/erlang/erts-*/bin | tail -n 1)/epmd" -kill >/dev/null 2>&1) || true
  fi
  if [ -d "$pdir/data" ]; then
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    if [ "$(id -u)" = 0 ]; then
      runuser -u postgres -- "$bin/pg_ctl" -D "$pdir/data" -m immediate stop >/dev/null 2>&1 || true
    else
      "$bin/pg_ctl" -D "$pdir/data" -m immediate stop >/dev/null 2>&1 || true
    fi
  fi
  rm -rf "$SERVERS_DIR"
}

# shellcheck shell=bash
# Private RabbitMQ and PostgreSQL servers on free 127.0.0.1 ports, for tests
# and local runs. Source this file, then:
#
#   servers_init            # a temp dir for their data, installs packages if missing
#   start_rabbitmq & start_postgres & wait
#   ...                     # HA_TEST_AMQP_URL, HA_TEST_POSTGRES_URL are exported
#   stop_servers            # always (use a trap)
#
# Both servers also listen with TLS (certificates made by make_test_certs
# at start: a CA, a server certificate for 127.0.0.1/localhost, a client
# certificate, and an unrelated CA for the wrong-CA tests); the TLS URLs
# and files are exported too (HA_TEST_*_TLS_URL, HA_TEST_TLS_*).
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
  # MQTT: the broker for ha-device-client's tests, an independent client
  # (mosquitto_pub/mosquitto_sub) for them and for the ingest's MQTT tests.
  { [ -x /usr/sbin/mosquitto ] && command -v mosquitto_pub >/dev/null && command -v mosquitto_sub >/dev/null; } || missing+=(mosquitto mosquitto-clients)
  if [ "${HA_NEED_HAPROXY:-}" = 1 ]; then
    command -v haproxy >/dev/null || missing+=(haproxy)
  fi
  if [ "${HA_NEED_WRK:-}" = 1 ]; then
    command -v wrk >/dev/null || missing+=(wrk)
  fi
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
  make_test_certs "$SERVERS_DIR/tls"
}

# Test-only PKI under DIR (P-256 keys, valid 2 days): ca.pem, server.pem/
# server.key (SANs 127.0.0.1, localhost), client.pem/client.key,
# wrong-ca.pem. Throwaway keys; the openssl CLI only, nothing links it.
make_test_certs() {
  local dir=$1 name
  mkdir -p "$dir"
  ( cd "$dir"
    for name in ca wrong-ca; do
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=ha-test $name" -keyout "$name.key" -out "$name.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    done
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >server.ext
    printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n' >client.ext
    for name in server client; do
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=ha-test-$name" \
        -keyout "$name.key" -out "$name.csr" 2>/dev/null
      openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile "$name.ext" -out "$name.pem" 2>/dev/null
    done
    # PostgreSQL wants its own copy of the key, private to it.
    cp server.key pg-server.key
    chmod 600 pg-server.key
    chmod 644 ./*.pem server.key client.key
  ) || { servers_log "making the test certificates failed"; return 1; }
  [ -s "$dir/server.pem" ] && [ -s "$dir/client.pem" ] || { servers_log "test certificates missing"; return 1; }
}

# Writes the files of one RabbitMQ node under DIR: its config, an env file
# that the server and its CLI both source, a `rabbitmqctl` wrapper and a
# `start` script (backgrounds the server; used again to restart a killed
# node). Args: DIR NODENAME EPMD_PORT COOKIE.
rabbit_node_files() {
  local dir=$1 node=$2 epmd=$3 cookie=$4 sbin port dist ctl_port tls_port
  local tls="$SERVERS_DIR/tls"
  sbin=$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin | sort -V | tail -n 1)
  mkdir -p "$dir/home" "$dir/mnesia" "$dir/log"
  port=$(free_port); dist=$(free_port); ctl_port=$(free_port); tls_port=$(free_port)
  printf '%s' "$cookie" >"$dir/home/.erlang.cookie"
  chmod 400 "$dir/home/.erlang.cookie"
  printf '[].\n' >"$dir/enabled_plugins"
  cat >"$dir/rabbitmq.conf" <<CONF
loopback_users = none
listeners.tcp.default = 127.0.0.1:$port
listeners.ssl.default = 127.0.0.1:$tls_port
ssl_options.cacertfile = $tls/ca.pem
ssl_options.certfile = $tls/server.pem
ssl_options.keyfile = $tls/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
CONF
  echo "$tls_port" >"$dir/tls_port"
  cat >"$dir/env" <<ENV
export HOME='$dir/home'
export RABBITMQ_NODENAME='$node'
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$port
export RABBITMQ_DIST_PORT=$dist
export RABBITMQ_MNESIA_BASE='$dir/mnesia'
export RABBITMQ_LOG_BASE='$dir/log'
export RABBITMQ_PID_FILE='$dir/pid'
export RABBITMQ_CONFIG_FILE='$dir/rabbitmq.conf'
export RABBITMQ_ENABLED_PLUGINS_FILE='$dir/enabled_plugins'
export RABBITMQ_CONF_ENV_FILE='$dir/no-such-file'
export ERL_CRASH_DUMP='$dir/erl_crash.dump'
export ERL_EPMD_PORT=$epmd
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none'
export RABBITMQ_CTL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
export RABBITMQ_CTL_DIST_PORT_MIN=$ctl_port
export RABBITMQ_CTL_DIST_PORT_MAX=$ctl_port
ENV
  local tool
  for tool in rabbitmqctl rabbitmq-queues; do
    cat >"$dir/$tool" <<CTL
#!/usr/bin/env bash
. '$dir/env'
exec '$sbin/$tool' "\$@"
CTL
    chmod +x "$dir/$tool"
  done
  cat >"$dir/start" <<START
#!/usr/bin/env bash
# Starts this node in the background; ./rabbitmqctl wait --timeout 90 ./pid tells when it is up.
. '$dir/env'
rm -f '$dir/pid'
nohup '$sbin/rabbitmq-server' >>'$dir/server.out' 2>&1 </dev/null &
START
  chmod +x "$dir/start"
}

# Starts the node in DIR and waits until it runs.
rabbit_node_up() {
  local dir=$1
  "$dir/start"
  if ! "$dir/rabbitmqctl" wait --timeout 90 "$dir/pid" >/dev/null 2>&1; then
    servers_log "RabbitMQ node in $dir did not start; its output:"
    tail -n 40 "$dir/server.out" >&2
    return 1
  fi
}

# rabbit_node_files + rabbit_node_up, with fresh ports on each of 3
# attempts: a port free_port found may be taken by another process before
# the node binds it. Same args as rabbit_node_files.
rabbit_node_new() {
  local attempt
  for attempt in 1 2 3; do
    rm -rf "$1"
    rabbit_node_files "$@"
    if rabbit_node_up "$1" 2>"$1.err"; then
      return 0
    fi
    if ! grep -q 'already_used\|eaddrinuse' "$1/server.out" 2>/dev/null; then
      cat "$1.err" >&2
      return 1
    fi
    servers_log "a port of $2 was taken (attempt $attempt); trying other ports"
  done
  cat "$1.err" >&2
  return 1
}

# Poison-message protection comes from a policy, as in production: a
# delivery limit, at-least-once dead-lettering to the topic exchange
# ha.dlx (routing key = the queue name), reject-publish when full.
rabbit_policy() {
  "$1/rabbitmqctl" set_policy ha-readings '\.readings\.[0-9]+$' \
    '{"delivery-limit":20,"dead-letter-exchange":"ha.dlx","dead-letter-strategy":"at-least-once","overflow":"reject-publish"}' \
    --apply-to queues >/dev/null
}

start_rabbitmq() {
  local dir="$SERVERS_DIR/rabbitmq"
  rabbit_node_new "$dir" ha-test@localhost "$(free_port)" "ha-test-cookie-$RANDOM$RANDOM" || return 1
  rabbit_policy "$dir"
  servers_log "RabbitMQ ready on 127.0.0.1:$(. "$dir/env"; echo "$RABBITMQ_NODE_PORT")"
}

# A 3-node cluster (nodes ha-a, ha-b, ha-c @localhost, one private epmd):
# the quorum queues get a member on each node. Used by scripts/faults.
start_rabbitmq_cluster() {
  local epmd cookie n dir
  epmd=$(free_port)
  cookie="ha-cluster-cookie-$RANDOM$RANDOM"
  rabbit_node_new "$SERVERS_DIR/rabbit-a" ha-a@localhost "$epmd" "$cookie" || return 1
  rabbit_node_new "$SERVERS_DIR/rabbit-b" ha-b@localhost "$epmd" "$cookie" & local pb=$!
  rabbit_node_new "$SERVERS_DIR/rabbit-c" ha-c@localhost "$epmd" "$cookie" & local pc=$!
  wait "$pb" && wait "$pc" || return 1
  for n in b c; do
    dir="$SERVERS_DIR/rabbit-$n"
    "$dir/rabbitmqctl" stop_app >/dev/null
    "$dir/rabbitmqctl" join_cluster ha-a@localhost >/dev/null \
      || { servers_log "ha-$n could not join the cluster"; return 1; }
    "$dir/rabbitmqctl" start_app >/dev/null
  done
  rabbit_policy "$SERVERS_DIR/rabbit-a"
  servers_log "RabbitMQ cluster ready: $("$SERVERS_DIR/rabbit-a/rabbitmqctl" cluster_status --formatter json | python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)["running_nodes"]))')"
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
  # TLS on the same port (clients choose with sslmode).
  cp "$SERVERS_DIR/tls/server.pem" "$SERVERS_DIR/tls/pg-server.key" "$dir/data/"
  if [ "$(id -u)" = 0 ]; then chown postgres "$dir/data/server.pem" "$dir/data/pg-server.key"; fi
  printf "ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'pg-server.key'\n" >>"$dir/data/postgresql.conf"
  # fsync off by default: test data need not survive a machine crash, and
  # it spares the shared disk. Never do this in production; the
  # performance run sets HA_PG_FSYNC=on (with synchronous_commit=on, the
  # default) so that "stored" means durable.
  local durability="-c fsync=${HA_PG_FSYNC:-off} -c synchronous_commit=on"
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 $durability -c max_connections=300" start >/dev/null \
    || { servers_log "PostgreSQL did not start:"; tail -n 40 "$dir/server.log" >&2; return 1; }
  echo "$port" >"$dir/port"
  # pg_ctl for this cluster, as the right user: `pgctl stop -m fast`,
  # `pgctl start` (the fault drills restart the database with it).
  cat >"$dir/pgctl" <<PGCTL
#!/usr/bin/env bash
set -e
cmd=\$1; shift
case "\$cmd" in
  start) exec ${run[*]} '$bin/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -t 60 \\
           -o "-p $port -k $dir -c listen_addresses=127.0.0.1 $durability -c max_connections=300" start "\$@" ;;
  *) exec ${run[*]} '$bin/pg_ctl' -D '$dir/data' -w -t 60 "\$cmd" "\$@" ;;
esac
PGCTL
  chmod +x "$dir/pgctl"
  servers_log "PostgreSQL ready on 127.0.0.1:$port"
}

# Exports the URLs of the servers started above.
export_server_urls() {
  local rdir="$SERVERS_DIR/rabbitmq" pdir="$SERVERS_DIR/postgres"
  if [ -f "$rdir/env" ]; then
    HA_TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$(. "$rdir/env"; echo "$RABBITMQ_NODE_PORT")/%2f"
    HA_TEST_AMQP_TLS_URL="amqps://guest:guest@127.0.0.1:$(cat "$rdir/tls_port")/%2f"
    HA_TEST_RABBITMQCTL="$rdir/rabbitmqctl"
    export HA_TEST_AMQP_URL HA_TEST_AMQP_TLS_URL HA_TEST_RABBITMQCTL
  fi
  if [ -f "$SERVERS_DIR/rabbit-a/env" ]; then
    local n urls=() dirs=()
    for n in a b c; do
      urls+=("amqp://guest:guest@127.0.0.1:$(. "$SERVERS_DIR/rabbit-$n/env"; echo "$RABBITMQ_NODE_PORT")/%2f")
      dirs+=("$SERVERS_DIR/rabbit-$n")
    done
    HA_FAULT_AMQP_URLS=$(IFS=,; echo "${urls[*]}")
    HA_FAULT_RABBIT_NODES=$(IFS=,; echo "${dirs[*]}")
    export HA_FAULT_AMQP_URLS HA_FAULT_RABBIT_NODES
  fi
  if [ -f "$pdir/port" ]; then
    HA_FAULT_PGCTL="$pdir/pgctl"
    export HA_FAULT_PGCTL
    HA_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$(cat "$pdir/port")/postgres"
    HA_TEST_POSTGRES_TLS_URL="$HA_TEST_POSTGRES_URL?sslmode=verify-full"
    export HA_TEST_POSTGRES_URL HA_TEST_POSTGRES_TLS_URL
  fi
  if [ -f "$SERVERS_DIR/tls/ca.pem" ]; then
    HA_TEST_TLS_CA="$SERVERS_DIR/tls/ca.pem"
    HA_TEST_TLS_WRONG_CA="$SERVERS_DIR/tls/wrong-ca.pem"
    HA_TEST_TLS_CLIENT_CERT="$SERVERS_DIR/tls/client.pem"
    HA_TEST_TLS_CLIENT_KEY="$SERVERS_DIR/tls/client.key"
    export HA_TEST_TLS_CA HA_TEST_TLS_WRONG_CA HA_TEST_TLS_CLIENT_CERT HA_TEST_TLS_CLIENT_KEY
  fi
}

stop_servers() {
  [ -n "${SERVERS_DIR:-}" ] && [ -d "$SERVERS_DIR" ] || return 0
  local rdir="$SERVERS_DIR/rabbitmq" pdir="$SERVERS_DIR/postgres" pid bin
  local d pids=()
  for d in "$rdir" "$SERVERS_DIR"/rabbit-?; do
    pid=$(cat "$d/pid" 2>/dev/null) || continue
    kill "$pid" 2>/dev/null || true
    pids+=("$pid")
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  done
  for d in "$rdir" "$SERVERS_DIR"/rabbit-a; do
    [ -f "$d/env" ] || continue
    (. "$d/env"; epmd -kill >/dev/null 2>&1 || "$(ls -d /usr/lib/erlang/erts-*/bin | tail -n 1)/epmd" -kill >/dev/null 2>&1) || true
  done
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

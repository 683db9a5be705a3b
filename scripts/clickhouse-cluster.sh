#!/usr/bin/env bash
# Installs (apt, idempotent) and starts a two-shard ClickHouse cluster on
# 127.0.0.1 for `clickhouse.cluster` mode: Debian's zookeeper (3.8) on
# $ZK_PORT and two clickhouse-server 18.16 processes (one replica per
# shard) with their own data directories under
# $CHURN_CACHE_DIR/clickhouse-cluster. The cluster is named `churn_cluster`
# in remote_servers; each server's macros give {shard} and {replica} for
# the Replicated* table paths; ON CLUSTER DDL goes through ZooKeeper.
# Usage: scripts/clickhouse-cluster.sh [start|stop|url]
#   env: ZK_PORT (12181), CH_SHARD1_HTTP (18223), CH_SHARD2_HTTP (18224)
# (not 18123: deploy/compose.podman.yml's ClickHouse listens there)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
DIR="$CHURN_CACHE_DIR/clickhouse-cluster"
ZK_PORT="${ZK_PORT:-12181}"
HTTP1="${CH_SHARD1_HTTP:-18223}"
HTTP2="${CH_SHARD2_HTTP:-18224}"
TCP1="${CH_SHARD1_TCP:-19201}"
TCP2="${CH_SHARD2_TCP:-19202}"
INTER1="${CH_SHARD1_INTERSERVER:-19211}"
INTER2="${CH_SHARD2_INTERSERVER:-19212}"

case "${1:-start}" in
  url) echo "http://127.0.0.1:$HTTP1"; exit 0 ;;
  stop)
    stop_group "$DIR/shard1/server.pid"
    stop_group "$DIR/shard2/server.pid"
    stop_group "$DIR/zookeeper/server.pid"
    exit 0 ;;
esac

install() {
  local missing=()
  [ -x /usr/sbin/clickhouse-server ] || missing+=(clickhouse-server clickhouse-client)
  [ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "clickhouse-cluster: installing ${missing[*]} from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}
install

start_zookeeper() {
  local d="$DIR/zookeeper"
  need_start "$ZK_PORT" "$d/server.pid" zookeeper || return 0
  mkdir -p "$d/data" "$d/conf" "$d/log"
  cat > "$d/conf/zoo.cfg" <<CFG
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$d/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=200
admin.enableServer=false
4lw.commands.whitelist=stat
CFG
  cat > "$d/conf/log4j.properties" <<'CFG'
log4j.rootLogger=WARN, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p %c{1}: %m%n
CFG
  echo "zookeeper: starting on 127.0.0.1:$ZK_PORT (data in $d)"
  # The Debian jar's manifest lists its dependencies' jars.
  setsid nohup java -Xmx256m -Dzookeeper.log.dir="$d/log" \
    -cp "$d/conf:/usr/share/java/zookeeper.jar" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$d/conf/zoo.cfg" \
    > "$d/log/stdout.log" 2>&1 < /dev/null &
  echo $! > "$d/server.pid"
  # `stat` names the server's mode only once it serves sessions (`ruok`
  # answers earlier; a shard started then fails on its replicated tables).
  for _ in $(seq 1 300); do
    if echo stat | timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$ZK_PORT; cat >&3; cat <&3" 2>/dev/null | grep -q '^Mode:'; then
      echo "zookeeper: ready"; return 0
    fi
    sleep 0.2
  done
  echo "zookeeper: did not become ready; see $d/log" >&2
  tail -n 20 "$d/log/stdout.log" >&2 || true
  exit 1
}

start_shard() { # n http tcp interserver
  local n="$1" http="$2" tcp="$3" inter="$4" d="$DIR/shard$1"
  need_start "$http" "$d/server.pid" "clickhouse shard $n" || return 0
  mkdir -p "$d/data" "$d/tmp" "$d/user_files" "$d/format_schemas" "$d/log"
  clickhouse_users_xml "$d/users.xml"
  cat > "$d/config.xml" <<XML
<yandex>
  <logger><level>warning</level><log>$d/log/server.log</log><errorlog>$d/log/error.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$http</http_port>
  <tcp_port>$tcp</tcp_port>
  <interserver_http_port>$inter</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <path>$d/data/</path>
  <tmp_path>$d/tmp/</tmp_path>
  <user_files_path>$d/user_files/</user_files_path>
  <format_schema_path>$d/format_schemas/</format_schema_path>
  <users_config>$d/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <zookeeper>
    <node><host>127.0.0.1</host><port>$ZK_PORT</port></node>
    <session_timeout_ms>30000</session_timeout_ms>
  </zookeeper>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
  <macros><shard>0$n</shard><replica>r1</replica></macros>
  <remote_servers>
    <churn_cluster>
      <shard><internal_replication>true</internal_replication>
        <replica><host>127.0.0.1</host><port>$TCP1</port></replica></shard>
      <shard><internal_replication>true</internal_replication>
        <replica><host>127.0.0.1</host><port>$TCP2</port></replica></shard>
    </churn_cluster>
  </remote_servers>
</yandex>
XML
  echo "clickhouse shard $n: starting on http://127.0.0.1:$http (data in $d)"
  setsid nohup /usr/sbin/clickhouse-server --config-file="$d/config.xml" > "$d/log/stdout.log" 2>&1 < /dev/null &
  echo $! > "$d/server.pid"
}

wait_shard() { # n http
  for _ in $(seq 1 150); do
    if curl -sf "http://127.0.0.1:$2/ping" >/dev/null 2>&1; then echo "clickhouse shard $1: ready"; return 0; fi
    sleep 0.2
  done
  echo "clickhouse shard $1: did not become ready; see $DIR/shard$1/log" >&2
  tail -n 20 "$DIR/shard$1/log/error.log" "$DIR/shard$1/log/stdout.log" >&2 || true
  exit 1
}

start_zookeeper
start_shard 1 "$HTTP1" "$TCP1" "$INTER1"
start_shard 2 "$HTTP2" "$TCP2" "$INTER2"
wait_shard 1 "$HTTP1"
wait_shard 2 "$HTTP2"

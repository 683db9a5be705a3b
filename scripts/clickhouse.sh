#!/usr/bin/env bash
# Installs (apt, idempotent) and starts a ClickHouse server on 127.0.0.1:8123
# with its own data directory under $CHURN_CACHE_DIR/clickhouse.
# Debian ships clickhouse-server 18.16, the only server installable here.
# Usage: scripts/clickhouse.sh [start|stop]    env: CLICKHOUSE_HTTP_PORT, CLICKHOUSE_TCP_PORT
set -euo pipefail
. "$(dirname "$0")/lib.sh"
DIR="$CHURN_CACHE_DIR/clickhouse"
HTTP_PORT="${CLICKHOUSE_HTTP_PORT:-8123}"
TCP_PORT="${CLICKHOUSE_TCP_PORT:-9000}"
URL="http://127.0.0.1:$HTTP_PORT"

if [ "${1:-start}" = stop ]; then stop_group "$DIR/server.pid"; exit 0; fi
need_start "$HTTP_PORT" "$DIR/server.pid" clickhouse || exit 0

if [ ! -x /usr/sbin/clickhouse-server ]; then
  echo "clickhouse: installing clickhouse-server from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
fi

mkdir -p "$DIR/data" "$DIR/tmp" "$DIR/user_files" "$DIR/format_schemas" "$DIR/log"
clickhouse_users_xml "$DIR/users.xml"
cat > "$DIR/config.xml" <<XML
<yandex>
  <logger><level>warning</level><log>$DIR/log/server.log</log><errorlog>$DIR/log/error.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$HTTP_PORT</http_port>
  <tcp_port>$TCP_PORT</tcp_port>
  <path>$DIR/data/</path>
  <tmp_path>$DIR/tmp/</tmp_path>
  <user_files_path>$DIR/user_files/</user_files_path>
  <format_schema_path>$DIR/format_schemas/</format_schema_path>
  <users_config>$DIR/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>536870912</mark_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
XML
echo "clickhouse: starting on $URL (data in $DIR)"
setsid nohup /usr/sbin/clickhouse-server --config-file="$DIR/config.xml" > "$DIR/log/stdout.log" 2>&1 < /dev/null &
echo $! > "$DIR/server.pid"
for _ in $(seq 1 150); do
  if curl -sf "$URL/ping" >/dev/null 2>&1; then echo "clickhouse: ready"; exit 0; fi
  sleep 0.2
done
echo "clickhouse: did not become ready; see $DIR/log" >&2
tail -20 "$DIR/log/error.log" "$DIR/log/stdout.log" >&2 || true
exit 1

#!/bin/sh
# Writes the server's config from the environment the compose file gives
# the official image (CLICKHOUSE_USER, CLICKHOUSE_PASSWORD), plus the ports
# and listen address host networking needs, then runs the server.
set -eu
HTTP_PORT="${CLICKHOUSE_HTTP_PORT:-8123}"
TCP_PORT="${CLICKHOUSE_TCP_PORT:-9000}"
LISTEN="${CLICKHOUSE_LISTEN_HOST:-0.0.0.0}"
CONF=/etc/clickhouse-local
cat > "$CONF/users.xml" <<XML
<yandex>
  <profiles><default><allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type></default></profiles>
  <users>
    <${CLICKHOUSE_USER:-default}>
      <password>${CLICKHOUSE_PASSWORD:-}</password>
      <networks><ip>::/0</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </${CLICKHOUSE_USER:-default}>
  </users>
  <quotas><default></default></quotas>
</yandex>
XML
cat > "$CONF/config.xml" <<XML
<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <listen_host>$LISTEN</listen_host>
  <http_port>$HTTP_PORT</http_port>
  <tcp_port>$TCP_PORT</tcp_port>
  <path>/var/lib/clickhouse/</path>
  <tmp_path>/var/lib/clickhouse/tmp/</tmp_path>
  <user_files_path>/var/lib/clickhouse/user_files/</user_files_path>
  <format_schema_path>/var/lib/clickhouse/format_schemas/</format_schema_path>
  <users_config>$CONF/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
</yandex>
XML
exec /usr/sbin/clickhouse-server --config-file="$CONF/config.xml"

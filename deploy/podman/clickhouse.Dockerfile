# ClickHouse from Debian (18.16, the only server installable here) for the
# compose core path on podman (deploy/compose.podman.yml); built by
# scripts/podman.sh compose-images. Not for production: use the official
# clickhouse/clickhouse-server image the main compose file names.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends clickhouse-server clickhouse-client \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/clickhouse /etc/clickhouse-local \
 && chown -R clickhouse:clickhouse /var/lib/clickhouse /etc/clickhouse-local
COPY clickhouse-entrypoint.sh /usr/local/bin/clickhouse-entrypoint.sh
USER clickhouse
VOLUME ["/var/lib/clickhouse"]
ENTRYPOINT ["/usr/local/bin/clickhouse-entrypoint.sh"]

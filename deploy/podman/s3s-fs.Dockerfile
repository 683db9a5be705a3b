# An S3 server for the compose core path on podman (MinIO's image cannot be
# pulled here): s3s-fs, the binary scripts/s3.sh builds from crates.io,
# copied into the local base. Built by scripts/podman.sh compose-images.
FROM debian:bookworm-slim
COPY s3s-fs /usr/local/bin/s3s-fs
RUN mkdir -p /data && chown nobody /data
USER nobody
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/s3s-fs"]

# syntax=docker/dockerfile:1
# churn: one self-contained server binary in a small runtime image.
#   docker build -t churn .
#   docker run -p 8000:8000 -v churn-data:/var/lib/churn churn            # serve (embedded store)
#   docker run -p 8000:8000 -v churn-data:/var/lib/churn churn demo       # generate, train, serve
# Without a registry (podman here): scripts/podman.sh makes the two base
# images locally, then  podman build --format docker --pull=never -t churn .

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The bundled librdkafka builds with make/gcc from the base image.
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY features features
COPY bench bench
COPY tests tests
# The same build command CI runs (scripts/test.sh; a test keeps them equal).
# Cache mounts (BuildKit and buildah/podman both honour them) keep the
# crates.io downloads and the target dir between builds, so a source change
# rebuilds the churn crate only; the binary is copied out of the cache,
# which is not part of the layer. COPY keeps the context's mtimes and cargo
# trusts mtimes: an edit older than the cached build would be missed, so the
# crate roots are touched (the layer cache skips this step when nothing
# changed, so touching costs nothing then).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    touch src/lib.rs src/main.rs \
 && cargo build --release --locked --bin churn \
 && cp target/release/churn /usr/local/bin/churn

FROM debian:bookworm-slim
# CA certificates for HTTPS to S3 and MLflow; no curl: the HEALTHCHECK is
# the binary's own `churn health` (GET /healthz on the configured port).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/churn --shell /usr/sbin/nologin churn \
 && mkdir -p /var/lib/churn /etc/churn \
 && chown churn:churn /var/lib/churn
COPY --from=build /usr/local/bin/churn /usr/local/bin/churn
# Documented defaults; every key is overridable by CHURN_* variables.
COPY config.toml /etc/churn/config.toml
ENV CHURN_DATA_DIR=/var/lib/churn \
    CHURN_SERVER__HOST=0.0.0.0 \
    CHURN_SERVER__PORT=8000 \
    RUST_LOG=info
USER churn
WORKDIR /var/lib/churn
VOLUME ["/var/lib/churn"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["churn", "--config", "/etc/churn/config.toml", "health", "--path", "/healthz"]
ENTRYPOINT ["churn", "--config", "/etc/churn/config.toml"]
CMD ["serve"]

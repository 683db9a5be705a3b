# syntax=docker/dockerfile:1
# churn: one self-contained server binary in a small runtime image.
#   docker build -t churn .
#   docker run -p 8000:8000 -v churn-data:/var/lib/churn churn            # serve (embedded store)
#   docker run -p 8000:8000 -v churn-data:/var/lib/churn churn demo       # generate, train, serve

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
RUN cargo build --release --locked --bin churn

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/churn --shell /usr/sbin/nologin churn \
 && mkdir -p /var/lib/churn /etc/churn \
 && chown churn:churn /var/lib/churn
COPY --from=build /src/target/release/churn /usr/local/bin/churn
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
  CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
ENTRYPOINT ["churn", "--config", "/etc/churn/config.toml"]
CMD ["serve"]

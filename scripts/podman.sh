#!/usr/bin/env bash
# Rootful podman for the container tests (tests/container.rs, tests/compose.rs):
# installs podman, buildah, runc, debootstrap and docker-compose from Debian
# (idempotent), writes the two settings this machine needs, and makes local
# base images for every `FROM` of the Dockerfile, since no registry is
# reachable here:
#   docker.io/library/debian:bookworm-slim  debootstrap minbase, trimmed as
#                                           the published slim image is
#   docker.io/library/rust:1.95-bookworm    that base + gcc/make + this
#                                           machine's Rust toolchain
# The Dockerfile's `FROM` lines stay the public ones; `podman build
# --pull=never` resolves them to these. Everything podman keeps (images,
# layers, buildah's cache mounts, the API socket) lives under
# $CHURN_CACHE_DIR/podman, so a fresh cache dir is a fresh podman.
#
# Usage: scripts/podman.sh [images|socket|compose-images|stop|env]
#   images  (default) install + base images
#   socket  also start the Docker-API socket for docker-compose
#   compose-images  also the local service images of deploy/compose.podman.yml
#   stop    stop the socket
#   env     print the exports the tests need (eval "$(scripts/podman.sh env)")
set -euo pipefail
. "$(dirname "$0")/lib.sh"
DIR="$CHURN_CACHE_DIR/podman"
SOCK="$DIR/podman.sock"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
RUST_VERSION=1.95
SLIM=docker.io/library/debian:bookworm-slim
RUST_IMAGE="docker.io/library/rust:$RUST_VERSION-bookworm"

exports() {
  echo "export CONTAINERS_CONF='$DIR/containers.conf'"
  echo "export CONTAINERS_STORAGE_CONF='$DIR/storage.conf'"
  # buildah keeps `RUN --mount=type=cache` directories under $TMPDIR.
  echo "export CHURN_TEST_PODMAN_TMPDIR='$DIR/tmp'"
  echo "export DOCKER_HOST='unix://$SOCK'"
}
case "${1:-images}" in
  env) exports; exit 0 ;;
  stop) stop_group "$DIR/socket.pid"; exit 0 ;;
  images|socket|compose-images) ;;
  *) echo "usage: $0 [images|socket|compose-images|stop|env]" >&2; exit 2 ;;
esac

if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null \
   || ! command -v docker-compose >/dev/null || ! command -v runc >/dev/null; then
  echo "podman: installing podman, buildah, runc, debootstrap, docker-compose from Debian"
  apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    podman buildah runc debootstrap docker-compose >/dev/null
fi

mkdir -p "$DIR/storage" "$DIR/run" "$DIR/tmp"
# podman asks for 1048576 open files by default and this VM refuses to raise
# limits; crun 1.8 refuses its hybrid cgroup layout; there is no systemd.
NOFILE="$(ulimit -Hn)"; [ "$NOFILE" = unlimited ] && NOFILE=1048576
cat > "$DIR/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$NOFILE:$NOFILE", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$DIR/events.log"
CONF
cat > "$DIR/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$DIR/storage"
runroot = "$DIR/run"
CONF
eval "$(exports)"

# The bookworm-slim base: minbase, then what the published image leaves
# out (docs, man pages, locales, apt lists and caches).
# Bump when the recipe below changes: the image is remade on the next run.
BASE_RECIPE=2
label() { podman image inspect --format "{{index .Labels \"$2\"}}" "$1" 2>/dev/null || true; }
if [ "$(label "$SLIM" churn.base-recipe)" != "$BASE_RECIPE" ]; then
  TAR="$DIR/bookworm-slim-$BASE_RECIPE.tar"
  if [ ! -s "$TAR" ]; then
    echo "podman: debootstrap bookworm (minbase) from $MIRROR (about a minute, once)"
    ROOT="$DIR/rootfs"
    rm -rf "$ROOT"
    debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" > "$DIR/debootstrap.log" 2>&1 \
      || { tail -n 30 "$DIR/debootstrap.log" >&2; exit 1; }
    cat > "$ROOT/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
    # The published image's apt settings: no package caches left in a
    # layer (apt-get update writes ~60 MB of them), no translations.
    cat > "$ROOT/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
    echo 'Acquire::Languages "none";' > "$ROOT/etc/apt/apt.conf.d/docker-no-languages"
    echo 'Acquire::GzipIndexes "true";' > "$ROOT/etc/apt/apt.conf.d/docker-gzip-indexes"
    echo 'APT::Install-Recommends "false";' > "$ROOT/etc/apt/apt.conf.d/99no-recommends"
    find "$ROOT/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$ROOT"/usr/share/{man,info,locale}/* "$ROOT"/var/lib/apt/lists/* \
      "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/log/*.log
    tar -C "$ROOT" --numeric-owner -cf "$TAR.part" . && mv "$TAR.part" "$TAR"
    rm -rf "$ROOT"
  fi
  podman import -q --change "LABEL churn.base-recipe=$BASE_RECIPE" "$TAR" "$SLIM" >/dev/null
  echo "podman: imported $SLIM"
fi

# The builder: the Dockerfile's `rust:1.95-bookworm`, with this machine's
# toolchain (no rustup channel is reachable) where the official image keeps
# it, and the C toolchain the bundled librdkafka, zlib and SQLite build with.
# Remade when the base was (its parent is then no longer the slim image).
slim_id="$(podman image inspect --format '{{.Id}}' "$SLIM")"
if [ "$(label "$RUST_IMAGE" churn.base-id)" != "$slim_id" ]; then
  TOOLCHAIN="$(rustc +"$RUST_VERSION" --print sysroot 2>/dev/null || rustc --print sysroot)"
  rustc --version | grep -q "^rustc $RUST_VERSION\." \
    || { echo "podman: the machine's rustc is not $RUST_VERSION.x" >&2; exit 1; }
  FULL="$(rustc --version | cut -d' ' -f2)"
  CTX="$DIR/rust-context"
  rm -rf "$CTX"; mkdir -p "$CTX/toolchain"
  # Hard links when on one file system; the docs (800 MB) stay out.
  for d in bin lib libexec; do cp -al "$TOOLCHAIN/$d" "$CTX/toolchain/" 2>/dev/null || cp -a "$TOOLCHAIN/$d" "$CTX/toolchain/"; done
  # This machine reaches crates.io through a TLS-inspecting proxy whose CA is
  # in the host's bundle only: cargo inside the builder trusts that bundle.
  cp /etc/ssl/certs/ca-certificates.crt "$CTX/"
  cat > "$CTX/Containerfile" <<EOF
FROM $SLIM
RUN apt-get update \\
 && apt-get install -y --no-install-recommends gcc g++ make libc6-dev pkg-config zlib1g-dev perl ca-certificates \\
 && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin RUST_VERSION=$FULL
COPY toolchain /usr/local/rustup/toolchains/$FULL-x86_64-unknown-linux-gnu
RUN mkdir -p /usr/local/cargo/bin \\
 && for b in /usr/local/rustup/toolchains/$FULL-x86_64-unknown-linux-gnu/bin/*; do ln -s "\$b" /usr/local/cargo/bin/; done \\
 && cargo --version && rustc --version
EOF
  echo "podman: building $RUST_IMAGE from this machine's toolchain"
  TMPDIR="$DIR/tmp" podman build -q --pull=never --network=host --label "churn.base-id=$slim_id" -t "$RUST_IMAGE" -f "$CTX/Containerfile" "$CTX" > "$DIR/rust-image.log" 2>&1 \
    || { tail -n 30 "$DIR/rust-image.log" >&2; exit 1; }
  rm -rf "$CTX"
  echo "podman: built $RUST_IMAGE"
fi

# Local images for the compose core path (deploy/compose.podman.yml), from
# deploy/podman/*.Dockerfile: ClickHouse from Debian, tansu and s3s-fs from
# the binaries scripts/kafka.sh and scripts/s3.sh install. The layer cache
# makes a rebuild of an unchanged one take a second.
compose_images() {
  local ctx="$DIR/compose-context"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp deploy/podman/* "$ctx/"
  cp "$(scripts/kafka.sh tansu-bin)" "$ctx/tansu"
  scripts/s3.sh build
  cp "$CHURN_TOOLS/bin/s3s-fs" "$ctx/s3s-fs"
  for name in clickhouse tansu s3s-fs; do
    TMPDIR="$DIR/tmp" podman build -q --format docker --pull=never --network=host \
      -t "localhost/churn-compose/$name:local" -f "$ctx/$name.Dockerfile" "$ctx" > "$DIR/compose-$name.log" 2>&1 \
      || { tail -n 30 "$DIR/compose-$name.log" >&2; exit 1; }
    echo "podman: built localhost/churn-compose/$name:local"
  done
  rm -rf "$ctx"
}
[ "${1:-images}" = compose-images ] && { cd "$(dirname "$0")/.."; compose_images; exit 0; }

if [ "${1:-images}" = socket ]; then
  # A service started from a checkout deleted since (CI's clones) cannot
  # start containers ("write child: broken pipe"): restart it.
  if [ -f "$DIR/socket.pid" ] \
    && [[ "$(readlink "/proc/$(cat "$DIR/socket.pid")/cwd" 2>/dev/null)" == *" (deleted)" ]]; then
    echo "podman: restarting the API service: its working directory was deleted"
    stop_group "$DIR/socket.pid"
  fi
  if [ -S "$SOCK" ] && [ -f "$DIR/socket.pid" ] && kill -0 "$(cat "$DIR/socket.pid")" 2>/dev/null; then
    echo "podman: API socket already at $SOCK"
  else
    rm -f "$SOCK"
    cd "$DIR"
    setsid nohup podman system service --time=0 "unix://$SOCK" > "$DIR/socket.log" 2>&1 < /dev/null &
    echo $! > "$DIR/socket.pid"
    for _ in $(seq 1 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
    [ -S "$SOCK" ] || { echo "podman: API socket did not start" >&2; tail -n 20 "$DIR/socket.log" >&2; exit 1; }
    echo "podman: API socket at $SOCK"
  fi
fi

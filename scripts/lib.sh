# Sourced by every script under scripts/ (and bench/): one root for every
# cache, venv, built tool, service data directory and the cargo target, so
# the fresh-machine path can be run on demand:
#
#   scripts/services.sh stop                      # the warm services, if any
#   CHURN_CACHE_DIR=$(mktemp -d) scripts/test.sh  # as on a new machine
#
# Debian packages (clickhouse-server, docker-compose, ...) stay system-wide:
# apt has no per-directory install.
#
# Layout under $CHURN_CACHE_DIR (default /var/tmp/churn):
#   target/        cargo target dir (CARGO_TARGET_DIR wins when set)
#   cargo/         CARGO_HOME: the crates.io registry cache
#   pip/           pip's download cache
#   venv-<name>/   Python venvs (kafka brokers, mlflow, airflow, chdb)
#   tools/         binaries built with `cargo install` (s3s-fs, oha)
#   <service>/     data, logs and pid files of each started service

CHURN_CACHE_DIR="${CHURN_CACHE_DIR:-/var/tmp/churn}"
mkdir -p "$CHURN_CACHE_DIR"
CHURN_CACHE_DIR="$(cd "$CHURN_CACHE_DIR" && pwd)"
export CHURN_CACHE_DIR
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CHURN_CACHE_DIR/target}"
# rustup's proxies find the toolchain through RUSTUP_HOME, so a fresh
# CARGO_HOME only means a fresh registry cache (crates.io is reachable).
export CARGO_HOME="$CHURN_CACHE_DIR/cargo"
export PIP_CACHE_DIR="$CHURN_CACHE_DIR/pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
CHURN_TOOLS="$CHURN_CACHE_DIR/tools"

# True when something accepts connections on 127.0.0.1:$1.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Whether the service with pid file $2 should be started on port $1:
# returns 1 when our own instance (pid file of this cache dir, process
# alive) already listens, 0 when the port is free, and exits when a process
# that this cache dir did not start holds the port: reusing it would hide
# first-run bugs of a fresh cache dir.
need_start() { # port pidfile name
  if ! listening "$1"; then
    rm -f "$2"
    return 0
  fi
  if [ -f "$2" ] && kill -0 "$(cat "$2")" 2>/dev/null; then
    # Started from a checkout that is gone since (CI's clones): a server
    # that resolves paths against its working directory fails then
    # (s3s-fs answers 500 to everything), so it is restarted.
    case "$(readlink "/proc/$(cat "$2")/cwd" 2>/dev/null)" in
      *" (deleted)")
        echo "$3: restarting: its working directory was deleted"
        stop_group "$2"
        for _ in $(seq 1 50); do listening "$1" || return 0; sleep 0.1; done
        echo "$3: 127.0.0.1:$1 still held after stopping it" >&2
        exit 1 ;;
    esac
    echo "$3: already running on 127.0.0.1:$1 (started from $CHURN_CACHE_DIR)"
    return 1
  fi
  echo "$3: 127.0.0.1:$1 is held by a process not started from $CHURN_CACHE_DIR;" >&2
  echo "  stop it (scripts/services.sh stop, with the CHURN_CACHE_DIR it was started with) or pick another port" >&2
  exit 1
}

# Stops the process group recorded in pid file $1 (services run under
# setsid, so the group holds their children too) and waits for every member
# to end: a child that outlives its leader (noida-db's binary under its
# Python wrapper did, spinning a core) would keep the port with no pid file
# left to stop it by. Members still there after 10 s are killed.
stop_group() {
  [ -f "$1" ] || return 0
  local pid; pid="$(cat "$1")"
  kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 -- "-$pid" 2>/dev/null; then
    echo "process group $pid outlived SIGTERM by 10 s: killing it" >&2
    kill -9 -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$1"
}

# A Python venv with the pinned packages, rebuilt when the pins change.
venv() { # dir package...
  local dir="$1"; shift
  local want="$*"
  if [ ! -f "$dir/.installed" ] || [ "$(cat "$dir/.installed")" != "$want" ]; then
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q "$@"
    echo "$want" > "$dir/.installed"
  fi
}

# Starts `churn demo` in the background and waits until it serves; sets
# DEMO_PID (stop it in the caller's trap) and DEMO_BASE. Extra NAME=VALUE
# arguments go to the demo's environment.
# Usage: start_demo BIN WORKDIR USERS [NAME=VALUE...]   (log: WORKDIR/demo.log)
start_demo() {
  local bin="$1" work="$2" users="$3"; shift 3
  env "$@" RUST_LOG=warn "$bin" --data-dir "$work/data" demo --port 0 --users "$users" \
    > "$work/demo.log" 2>&1 &
  DEMO_PID=$!
  DEMO_BASE=""
  for _ in $(seq 1200); do
    DEMO_BASE="$(sed -n 's/^Ready: serving on \(http[^ ]*\).*/\1/p' "$work/demo.log" | head -1)"
    [ -n "$DEMO_BASE" ] && return 0
    kill -0 "$DEMO_PID" 2>/dev/null || { cat "$work/demo.log"; echo "demo exited" >&2; return 1; }
    sleep 0.2
  done
  cat "$work/demo.log"; echo "demo never became ready" >&2; return 1
}

# Writes the users.xml every ClickHouse server of ours runs with (user
# `default` without a password, loopback only; LowCardinality allowed,
# which 18.16 gates): scripts/clickhouse.sh and scripts/clickhouse-cluster.sh.
clickhouse_users_xml() { # file
  cat > "$1" <<XML
<yandex>
  <profiles><default><allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default></default></quotas>
</yandex>
XML
}

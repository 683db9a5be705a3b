#!/usr/bin/env bash
# Fuzzes the event parser, the /events body splitter and the config loader
# with cargo-fuzz (libFuzzer + AddressSanitizer, nightly). Not part of the
# test command: a second, sanitizer build of every dependency does not
# belong in CI. The corpus persists in $CHURN_CACHE_DIR/fuzz-corpus.
# Usage: scripts/fuzz.sh [seconds-per-target]     (default 120)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
SECS="${1:-120}"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: needs a nightly toolchain (rustup toolchain install nightly)" >&2; exit 1
fi
if [ ! -x "$CHURN_TOOLS/bin/cargo-fuzz" ]; then
  echo "fuzz: installing cargo-fuzz into $CHURN_TOOLS"
  cargo install cargo-fuzz --version 0.13.1 --locked --root "$CHURN_TOOLS"
fi
export PATH="$CHURN_TOOLS/bin:$PATH"
# Its own target dir: sanitizer objects never mix with the test build's.
export CARGO_TARGET_DIR="$CHURN_CACHE_DIR/fuzz-target"
CORPUS="$CHURN_CACHE_DIR/fuzz-corpus"
mkdir -p "$CORPUS"/{event_parser,event_body,config_file}
# Seeds: real shapes, so mutation starts from valid inputs.
printf '%s' '{"user_id":1,"event_time":"2026-01-01T00:00:00Z","event_type":"login","session_id":"s1","amount":2.5}' \
  > "$CORPUS/event_parser/seed-valid"
printf '%s\n%s\n' '{"user_id":1,"event_time":1700000000,"event_type":"view"}' '[1,2]' > "$CORPUS/event_body/seed-ndjson"
printf '%s' '[{"user_id":2,"event_time":1700000000,"event_type":"buy","amount":1}]' > "$CORPUS/event_body/seed-array"
cp config.toml "$CORPUS/config_file/seed-config.toml"
cargo +nightly fuzz build --fuzz-dir fuzz
for target in event_parser event_body config_file; do
  echo "== fuzz $target for ${SECS}s"
  cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$CORPUS/$target" -- \
    -max_total_time="$SECS" -max_len=4096 -rss_limit_mb=2048 2>&1 | tail -4
  echo "corpus $target: $(ls "$CORPUS/$target" | wc -l) inputs"
done

#!/usr/bin/env bash
# Runs every test: unit and property tests, storage and server tests on SQLite
# and PostgreSQL, and the Playwright journeys in Chromium. Builds once: the
# wasm bundle (scripts/bundle.sh), then one cargo build, with the bundle
# embedded in the server, shared by every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --test

# Leftovers from interrupted runs.
psql -h 127.0.0.1 -U postgres -d test -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'tg_t_%'" 2>/dev/null |
  while read -r db; do psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" || true; done

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "==> formatting and lints" >&2
cargo fmt --all --check
cargo clippy -p app -p migration -p server --all-targets -- -D warnings

echo "==> building the browser bundle" >&2
./scripts/bundle.sh

# Every build below has the bundle embedded (`embed-site`): the feature is
# part of what cargo fingerprints, so building the end-to-end binary with it
# after tests built without it would compile the server crate a second time
# (a minute and more). `--features server/embed-site` adds it to `server`
# alone; the disk path it replaces is what `cargo leptos watch` uses.
echo "==> cargo tests (SQLite and PostgreSQL)" >&2
cargo test -p app -p migration -p server --features server/embed-site --lib --bins --tests 2>&1 | tee -a "$log"

# The browser journeys run target/debug/tollgate, which the integration
# tests above built (cargo builds a package's binaries for its tests). A
# separate `cargo build` would resolve features without the dev-dependencies
# and compile some thirty crates and the server a second time.
test -x target/debug/tollgate
echo "==> end-to-end tests in Chromium" >&2
(cd end2end && npx playwright test) 2>&1 | tee -a "$log"

# That binary copied alone into an empty directory (no Leptos.toml, no
# target/site) serves and hydrates the console from the bundle it carries.
echo "==> the binary alone in an empty directory: hydration" >&2
alone=$(mktemp -d)
trap 'rm -f "$log"; rm -rf "$alone"' EXIT
cp target/debug/tollgate "$alone/"
(cd end2end && TOLLGATE_E2E_BIN="$alone/tollgate" TOLLGATE_E2E_CWD="$alone" \
  npx playwright test tests/hydration.spec.ts) 2>&1 | tee -a "$log"

passed=$(grep -Eo 'test result: ok\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
e2e=$(grep -Eo '^ +[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
echo "$((passed + e2e)) passed, 0 failed"

#!/usr/bin/env bash
# Installs what Tollgate's build needs, skipping whatever is already present,
# so running it again is quick. With --test it also prepares the test tools:
# Debian's Chromium and sqlite3, the end-to-end npm packages and a running
# PostgreSQL.
# With --watch it installs cargo-leptos, for `cargo leptos watch` only.
set -euo pipefail
cd "$(dirname "$0")/.."
for_tests=false
[ "${1:-}" = "--test" ] && for_tests=true

say() { echo "==> $*" >&2; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# cargo-leptos is only for `cargo leptos watch` in development; the build
# path (scripts/bundle.sh) does not need it.
if [ "${1:-}" = "--watch" ] && ! cargo leptos --version 2>/dev/null | grep -q "0\.3\.10"; then
  say "installing cargo-leptos 0.3.10 for development (about 12 minutes)"
  cargo install cargo-leptos@0.3.10 --locked --features no_downloads
fi

# wasm-bindgen-cli must match the wasm-bindgen version in Cargo.lock exactly.
# Only the `wasm-bindgen` tool is used, never its test runner, so the test
# runner's TLS stack is left out (--no-default-features), and it is compiled
# at opt-level 1: a third of the compile time of the default 3, and it still
# runs in seconds on our bundle. With --wasm-bindgen-only, setup does nothing
# else (scripts/run.sh runs that in parallel with the browser crate's build).
wb_version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
if ! wasm-bindgen --version 2>/dev/null | grep -q " ${wb_version}\$"; then
  say "installing wasm-bindgen-cli ${wb_version}"
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 cargo install wasm-bindgen-cli --version "${wb_version}" \
    --no-default-features --bin wasm-bindgen
fi
[ "${1:-}" = "--wasm-bindgen-only" ] && exit 0

apt_missing=()
command -v wasm-opt >/dev/null || apt_missing+=(binaryen)
if $for_tests; then
  command -v chromium >/dev/null || apt_missing+=(chromium)
  # The backup test (server/tests/backup.rs) runs the SQLite shell's .backup.
  command -v sqlite3 >/dev/null || apt_missing+=(sqlite3)
fi
if [ ${#apt_missing[@]} -gt 0 ]; then
  say "installing ${apt_missing[*]} from Debian"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_missing[@]}"
fi

if $for_tests; then
  lock_sum=$(sha256sum end2end/package-lock.json | cut -d' ' -f1)
  if [ "$(cat end2end/node_modules/.tollgate-lock 2>/dev/null)" != "$lock_sum" ]; then
    say "installing the end-to-end test packages (npm ci)"
    (cd end2end && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
    echo "$lock_sum" > end2end/node_modules/.tollgate-lock
  fi

  # The official OpenAI and Anthropic Python packages, pinned, drive the
  # protocol tests (server/tests/protocols.rs) as real clients; schemathesis
  # checks the OpenAPI document against the gateway (server/tests/schemathesis.rs).
  sdk_pins="openai==3.57.0 anthropic==2.14.0 schemathesis==4.32.5"
  venv=end2end/.venv-sdk
  if [ "$(cat "$venv/.tollgate-pins" 2>/dev/null)" != "$sdk_pins" ]; then
    say "installing the openai, anthropic and schemathesis Python packages into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install -q --disable-pip-version-check $sdk_pins
    echo "$sdk_pins" > "$venv/.tollgate-pins"
  fi

  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    say "starting PostgreSQL"
    for v in $(ls /etc/postgresql 2>/dev/null); do
      pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    done
    for _ in $(seq 1 30); do
      pg_isready -q -h 127.0.0.1 -p 5432 && break
      sleep 1
    done
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "error: PostgreSQL is not reachable at 127.0.0.1:5432; the storage tests need it" >&2
    exit 1
  fi
fi

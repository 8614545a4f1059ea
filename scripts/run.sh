#!/usr/bin/env bash
# Builds and runs Tollgate on its embedded default: SQLite under data/ and the
# example tollgate.yaml (with the built-in `dummy` model). Extra arguments go
# to `tollgate serve`, e.g. --listen 0.0.0.0:3000. The release binary carries
# the browser bundle (the `embed-site` feature), so target/release/tollgate
# can be copied anywhere and run on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
build_server() { cargo build --release -p server --features embed-site; }
# On a first build three compiles run in parallel: the server's
# dependencies (its build script waits for the bundle before the server
# crate itself, which embeds it, compiles), wasm-bindgen-cli (in its own
# directory), and the browser crate. The bundle is removed first so that the
# build script must wait for the new one.
server_build=
if [ ! -x target/release/tollgate ]; then
  rm -f target/site/pkg/tollgate.* target/site-gz/*.gz target/site-gz/.complete
  TOLLGATE_WAIT_FOR_BUNDLE=3600 cargo build --release -p server --features embed-site &
  server_build=$!
  trap '[ -n "$server_build" ] && kill "$server_build" 2>/dev/null' EXIT
fi
rustup target list --installed | grep -qx wasm32-unknown-unknown ||
  rustup target add wasm32-unknown-unknown
./scripts/setup.sh --wasm-bindgen-only &
wasm_bindgen=$!
./scripts/bundle.sh --release --compile-only
wait "$wasm_bindgen"
./scripts/setup.sh
./scripts/bundle.sh --release
if [ -n "$server_build" ]; then
  wait "$server_build"
  server_build=
fi
build_server
exec ./target/release/tollgate serve "$@"

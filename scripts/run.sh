#!/usr/bin/env bash
# Builds and runs Tollgate on its embedded default: SQLite under data/ and the
# example tollgate.yaml (with the built-in `dummy` model). Extra arguments go
# to `tollgate serve`, e.g. --listen 0.0.0.0:3000. The release binary carries
# the browser bundle (the `embed-site` feature), so target/release/tollgate
# can be copied anywhere and run on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
# On a fresh machine wasm-bindgen-cli is compiled from source; it compiles in
# its own directory while the browser crate compiles here, in parallel.
rustup target list --installed | grep -qx wasm32-unknown-unknown ||
  rustup target add wasm32-unknown-unknown
./scripts/setup.sh --wasm-bindgen-only &
wasm_bindgen=$!
./scripts/bundle.sh --release --compile-only
wait "$wasm_bindgen"
./scripts/setup.sh
./scripts/bundle.sh --release
cargo build --release -p server --features embed-site
exec ./target/release/tollgate serve "$@"

#!/usr/bin/env bash
# Builds the browser bundle into target/site/pkg without cargo-leptos:
# the `frontend` crate for wasm32, the wasm-bindgen CLI at the Cargo.lock
# version, wasm-opt for release, and the stylesheet beside them. The names
# match what the server links from its HTML shell (LEPTOS_OUTPUT_NAME in
# .cargo/config.toml): pkg/tollgate.js, pkg/tollgate.wasm, pkg/tollgate.css.
# Gzip copies go to target/site-gz for the binary to embed (the server's
# `embed-site` feature); not beside the originals, where a later
# `cargo leptos watch` would leave them stale but still served.
# Usage: scripts/bundle.sh [--release] [--compile-only]
# --compile-only stops after the cargo build (scripts/run.sh runs it while
# wasm-bindgen-cli is still being installed).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=dev
dir=debug
compile_only=false
for arg in "$@"; do
  case "$arg" in
    --release) profile=wasm-release; dir=wasm-release ;;
    --compile-only) compile_only=true ;;
    *) echo "usage: scripts/bundle.sh [--release] [--compile-only]" >&2; exit 2 ;;
  esac
done
pkg=target/site/pkg
# Only `frontend` is selected, so the server's `ssr` features never reach the
# browser crate (and the browser's `hydrate` never reaches the server).
cargo build -p frontend --lib --target wasm32-unknown-unknown --profile "$profile"
$compile_only && exit 0
mkdir -p "$pkg"
gz=target/site-gz
mkdir -p "$gz"
# The marker a waiting server build (scripts/run.sh) looks for; gone while
# the bundle is being replaced.
rm -f "$gz/.complete"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
wasm-bindgen --target web --no-typescript --out-name tollgate --out-dir "$tmp" \
  "target/wasm32-unknown-unknown/$dir/frontend.wasm"
mv "$tmp/tollgate_bg.wasm" "$tmp/tollgate.wasm"
if [ "$profile" = wasm-release ]; then
  wasm-opt -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
    "$tmp/tollgate.wasm" -o "$tmp/tollgate.wasm"
fi
cp style/main.css "$tmp/tollgate.css"
# Only changed files are replaced (each with its gzip copy after it): an
# unchanged bundle keeps its times, so the server's build script does not
# rerun and the server crate is not compiled again for nothing.
for f in tollgate.js tollgate.wasm tollgate.css; do
  if ! cmp -s "$tmp/$f" "$pkg/$f" || [ ! -e "$gz/$f.gz" ]; then
    mv "$tmp/$f" "$pkg/$f"
    gzip -9 -n -c "$pkg/$f" > "$gz/$f.gz"
  fi
done
touch "$gz/.complete"
echo "bundle ($profile): $(du -h "$pkg/tollgate.wasm" | cut -f1) of wasm in $pkg" >&2

#!/usr/bin/env bash
# Starts the built `tollgate` binary for the end-to-end tests on a fresh SQLite
# database and a copy of the example config, from the workspace root (where
# Leptos.toml and target/site are).
set -euo pipefail
port="$1"
root="$(cd "$(dirname "$0")/.." && pwd)"
run="$root/end2end/.run"
rm -rf "$run"
mkdir -p "$run"
cp "$root/tollgate.yaml" "$run/tollgate.yaml"
cd "$root"
exec "$root/target/debug/tollgate" serve \
  --config "$run/tollgate.yaml" \
  --database-url "sqlite://$run/tollgate.db" \
  --listen "127.0.0.1:$port"

#!/usr/bin/env bash
# Starts the built `tollgate` binary for the end-to-end tests on a fresh SQLite
# database and a copy of end2end/tollgate.e2e.yaml. By default that is
# target/debug/tollgate, run from the workspace root (where Leptos.toml and
# target/site are); TOLLGATE_E2E_BIN and TOLLGATE_E2E_CWD choose another
# binary and working directory (scripts/test.sh runs the hydration test
# against the binary alone in an empty directory). The log goes to
# .run/server.log too, where the tests find the one-time setup address.
set -euo pipefail
port="$1"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${TOLLGATE_E2E_BIN:-$root/target/debug/tollgate}"
cwd="${TOLLGATE_E2E_CWD:-$root}"
run="$root/end2end/.run"
rm -rf "$run"
mkdir -p "$run"
cp "$root/end2end/tollgate.e2e.yaml" "$run/tollgate.yaml"
cd "$cwd"
exec "$bin" serve \
  --config "$run/tollgate.yaml" \
  --database-url "sqlite://$run/tollgate.db" \
  --listen "127.0.0.1:$port" 2> >(tee "$run/server.log" >&2)

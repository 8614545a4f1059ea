#!/usr/bin/env bash
# Builds and runs Tollgate on its embedded default: SQLite under data/ and the
# example tollgate.yaml (with the built-in `dummy` model). Extra arguments go
# to `tollgate serve`, e.g. --listen 0.0.0.0:3000.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/bundle.sh --release
cargo build --release -p server
exec ./target/release/tollgate serve "$@"

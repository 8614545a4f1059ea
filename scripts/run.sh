#!/usr/bin/env bash
# Builds and runs Tollgate on its embedded default: SQLite under data/ and the
# example tollgate.yaml (with the built-in `dummy` model). Extra arguments go
# to `tollgate serve`, e.g. --listen 0.0.0.0:3000. The release binary carries
# the browser bundle (the `embed-site` feature), so target/release/tollgate
# can be copied anywhere and run on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/bundle.sh --release
cargo build --release -p server --features embed-site
exec ./target/release/tollgate serve "$@"

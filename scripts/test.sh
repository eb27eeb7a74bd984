#!/usr/bin/env bash
# Runs every test: unit tests, the end-to-end suite over loopback, the CLI
# tests, and the control plane's API suite on SQLite and on a PostgreSQL
# server started here on loopback. Installs what is missing first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install-toolchain.sh
scripts/build-guests.sh >/dev/null
EDGE_TEST_POSTGRES_URL="$(scripts/postgres.sh start)"
export EDGE_TEST_POSTGRES_URL
trap 'scripts/postgres.sh stop' EXIT
cargo test --workspace "$@"

#!/usr/bin/env bash
# Runs every test: unit tests, the end-to-end suite over loopback, and the
# CLI tests. Installs the wasm32-wasip2 target first if it is missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install-toolchain.sh
scripts/build-guests.sh >/dev/null
cargo test --workspace "$@"

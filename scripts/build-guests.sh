#!/usr/bin/env bash
# Builds the example guests in examples/ into wasi:http components:
#   target/guests/<name>.wasm
# Needs the wasm32-wasip2 target (scripts/install-toolchain.sh adds it).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/target/guests"
mkdir -p "$out"
(cd "$root/examples" && cargo build --release --quiet)
for wasm in "$root"/examples/target/wasm32-wasip2/release/*.wasm; do
  name="$(basename "$wasm" .wasm)"
  # temp + rename: concurrent builds never leave a half-copied component
  tmp="$(mktemp "$out/.${name}.XXXXXX")"
  cp "$wasm" "$tmp"
  mv "$tmp" "$out/${name//_/-}.wasm"
done
ls "$out"/*.wasm

#!/usr/bin/env bash
# Builds examples/python-hello into a wasi:http component with componentize-py
# (installed into target/py-venv by scripts/install-toolchain.sh):
#   target/guests/python-hello.wasm
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/target/py-venv"
out="$root/target/guests/python-hello.wasm"
[ -x "$venv/bin/componentize-py" ] || "$root/scripts/install-toolchain.sh" >&2

mkdir -p "$(dirname "$out")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# componentize-py writes __pycache__ into the app directory: build a copy.
cp -r "$root/examples/python-hello" "$work/app"
(cd "$work" && "$venv/bin/componentize-py" -q -d "$root/sdk/wit" -w service \
  componentize -p "$work/app" app -o "$work/python-hello.wasm")
tmp="$(mktemp "$(dirname "$out")/.python-hello.XXXXXX")"
cp "$work/python-hello.wasm" "$tmp"
mv "$tmp" "$out"

echo "$out"

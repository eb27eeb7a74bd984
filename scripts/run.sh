#!/usr/bin/env bash
# Starts an edge node with the example config (config/examples/node.toml):
# two tenants' services built from examples/, on 127.0.0.1:8080, metrics on
# 127.0.0.1:9090. Ctrl-C stops it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install-toolchain.sh
scripts/build-guests.sh >/dev/null
cargo build --quiet -p edge-node
cat <<'TRY'

The edge node is starting with two services. Try:

  curl -H 'Host: hello.localhost' http://127.0.0.1:8080/
  curl -H 'Host: echo.localhost' -d 'some body' http://127.0.0.1:8080/any/path?log=hi
  curl --http2-prior-knowledge -H 'Host: api.echo.localhost' http://127.0.0.1:8080/h2
  curl -s http://127.0.0.1:9090/metrics | grep '^edge_requests_total'

Serve your own component for any Host (local mode):

  cargo run -p edge-node -- serve --module path/to/app.wasm --listen 127.0.0.1:8081 --admin-listen 127.0.0.1:9091

TRY
exec target/debug/edge-node serve --config config/examples/node.toml --data-dir target/edge-data "$@"

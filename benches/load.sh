#!/usr/bin/env bash
# Load benchmark: the edge node serving the hello guest (a fresh instance per
# request) against native-hello, a plain hyper server giving the same answer,
# in the same run, with the same wrk settings. Prints req/s, p99 and the
# node's share of native throughput.
#
#   benches/load.sh                    # 10 s per server, 64 connections
#   DURATION=30s CONNECTIONS=128 benches/load.sh
#
# Everything runs on 127.0.0.1 and stops by itself; only the processes this
# script starts are stopped.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NODE_PORT="${NODE_PORT:-18080}"
NATIVE_PORT="${NATIVE_PORT:-18088}"
ADMIN_PORT="${ADMIN_PORT:-19080}"

prepare

start native target/release/native-hello "127.0.0.1:$NATIVE_PORT"
# The access log is off, as it is for the baselines.
RUST_LOG="info,access=off" start node target/release/edge-node serve \
  --module target/guests/hello.wasm \
  --listen "127.0.0.1:$NODE_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" --data-dir "$data/node"
wait_for "native hello" "http://127.0.0.1:$NATIVE_PORT/"
wait_for "the node" "http://127.0.0.1:$NODE_PORT/"

echo "warming up..." >&2
warm_up "http://127.0.0.1:$NATIVE_PORT/"
warm_up "http://127.0.0.1:$NODE_PORT/"

read -r native_rps _ native_p99 < <(wrk_figures "$CONNECTIONS" "http://127.0.0.1:$NATIVE_PORT/")
read -r node_rps _ node_p99 < <(wrk_figures "$CONNECTIONS" "http://127.0.0.1:$NODE_PORT/")

printf '\nwrk -t%s -c%s -d%s, HTTP/1.1 keep-alive, 127.0.0.1, %s cores\n\n' \
  "$THREADS" "$CONNECTIONS" "$DURATION" "$(nproc)"
printf '%-34s %12s %10s\n' "server" "req/s" "p99 ms"
printf '%-34s %12.0f %10s\n' "native hyper hello (baseline)" "$native_rps" "$native_p99"
printf '%-34s %12.0f %10s\n' "edge node, hello guest" "$node_rps" "$node_p99"
printf '\nratio node / native: %s\n' "$(ratio "$node_rps" "$native_rps")"

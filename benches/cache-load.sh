#!/usr/bin/env bash
# Cache and backend-fetch benchmark, in one run on one node:
#
#   hello        the hello guest (no backend): the reference
#   cache hit    the caching-proxy guest; every request a hit in the HTTP
#                cache (the origin says max-age=3600)
#   fetch        the caching-proxy guest with the backend's cache off: every
#                request goes to the origin over a pooled connection
#   origin       wrk straight at the origin (native-hello)
#
# Throughput with 64 connections, then latency with 1 connection. Prints
# the cache-hit share of hello throughput and what a backend fetch adds to a
# request's latency over asking the origin directly.
#
#   benches/cache-load.sh
#   DURATION=10s benches/cache-load.sh
#
# Everything runs on 127.0.0.1 and stops by itself; only the processes this
# script starts are stopped.
DURATION="${DURATION:-5s}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
NODE_PORT="${NODE_PORT:-18180}"
ORIGIN_PORT="${ORIGIN_PORT:-18188}"
ADMIN_PORT="${ADMIN_PORT:-19180}"

prepare

cat >"$data/node.toml" <<TOML
[node]
listen = "127.0.0.1:$NODE_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
data_dir = "$data/node"

[[service]]
name = "hello"
domains = ["hello.bench"]
module = "$root/target/guests/hello.wasm"
TOML
proxy_service cached cached.bench "$ORIGIN_PORT" >>"$data/node.toml"
proxy_service fetch fetch.bench "$ORIGIN_PORT" false off >>"$data/node.toml"

start origin target/release/native-hello "127.0.0.1:$ORIGIN_PORT" "max-age=3600"
RUST_LOG="info,access=off" start node target/release/edge-node serve --config "$data/node.toml"
for host in hello.bench cached.bench fetch.bench; do
  wait_for "$host" "http://127.0.0.1:$NODE_PORT/" -H "Host: $host"
done

# run_wrk PORT HOST CONNECTIONS -> prints "REQ_PER_SEC P50_MS P99_MS"
run_wrk() { wrk_figures "$3" -H "Host: $2" "http://127.0.0.1:$1/"; }

echo "warming up..." >&2
for host in hello.bench cached.bench fetch.bench; do
  warm_up -H "Host: $host" "http://127.0.0.1:$NODE_PORT/"
done

read -r hello_rps hello_p50 hello_p99 < <(run_wrk "$NODE_PORT" hello.bench "$CONNECTIONS")
read -r hit_rps hit_p50 hit_p99 < <(run_wrk "$NODE_PORT" cached.bench "$CONNECTIONS")
read -r fetch_rps fetch_p50 fetch_p99 < <(run_wrk "$NODE_PORT" fetch.bench "$CONNECTIONS")
read -r origin_rps origin_p50 origin_p99 < <(run_wrk "$ORIGIN_PORT" origin "$CONNECTIONS")
read -r _ hello_l50 hello_l99 < <(run_wrk "$NODE_PORT" hello.bench 1)
read -r _ hit_l50 hit_l99 < <(run_wrk "$NODE_PORT" cached.bench 1)
read -r _ fetch_l50 fetch_l99 < <(run_wrk "$NODE_PORT" fetch.bench 1)
read -r _ origin_l50 origin_l99 < <(run_wrk "$ORIGIN_PORT" origin 1)

hits="$(curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^edge_http_cache_requests_total\{outcome="hit"\}/ { print $2 }')"

printf '\nwrk -t%s, %s per run, HTTP/1.1 keep-alive, 127.0.0.1, %s cores\n\n' \
  "$THREADS" "$DURATION" "$(nproc)"
printf '%-28s %10s %9s %9s | %12s %12s\n' "" "req/s" "p50 ms" "p99 ms" "c=1 p50 ms" "c=1 p99 ms"
printf '%-28s %10.0f %9s %9s | %12s %12s\n' "hello guest" "$hello_rps" "$hello_p50" "$hello_p99" "$hello_l50" "$hello_l99"
printf '%-28s %10.0f %9s %9s | %12s %12s\n' "proxy guest, cache hit" "$hit_rps" "$hit_p50" "$hit_p99" "$hit_l50" "$hit_l99"
printf '%-28s %10.0f %9s %9s | %12s %12s\n' "proxy guest, cache off" "$fetch_rps" "$fetch_p50" "$fetch_p99" "$fetch_l50" "$fetch_l99"
printf '%-28s %10.0f %9s %9s | %12s %12s\n' "origin directly" "$origin_rps" "$origin_p50" "$origin_p99" "$origin_l50" "$origin_l99"
printf '\ncache hits counted by the node: %s\n' "$hits"
printf 'ratio cache hit / hello: %s (target >= 0.70)\n' "$(ratio "$hit_rps" "$hello_rps")"
awk -v f="$fetch_l50" -v h="$hello_l50" -v o="$origin_l50" 'BEGIN {
  printf "backend fetch, c=1 p50: %.3f ms through the node vs %.3f ms to the origin directly;\n", f, o
  printf "  the fetch adds %.3f ms over the hello guest, %.3f ms over a direct request\n", f - h, f - o }'

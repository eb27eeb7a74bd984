#!/usr/bin/env bash
# What metrics cost: two nodes, identical but for `[metrics] enabled`, serve
# the same services in the same run:
#
#   hello         the hello guest, a fresh instance per request
#   edge-cached   a static response from the edge cache (no guest runs):
#                 the cheapest request, where counting weighs the most
#
# wrk against each, alternating on / off for ROUNDS rounds; prints req/s for
# each run and the mean throughput with metrics on as a share of off.
# Target: at least 0.95.
#
#   benches/metrics-overhead.sh
#   DURATION=20s ROUNDS=3 benches/metrics-overhead.sh
#
# Everything runs on 127.0.0.1 and stops by itself; only the processes this
# script starts are stopped.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-2}"
ON_PORT="${ON_PORT:-18280}"
OFF_PORT="${OFF_PORT:-18281}"
ORIGIN_PORT="${ORIGIN_PORT:-18288}"

prepare

# node_config NAME PORT METRICS_ENABLED
node_config() {
  cat >"$data/$1.toml" <<TOML
[node]
listen = "127.0.0.1:$2"
admin_listen = "127.0.0.1:0"
data_dir = "$data/$1"

[metrics]
enabled = $3

[[service]]
name = "hello"
domains = ["hello.bench"]
module = "$root/target/guests/hello.wasm"
TOML
  proxy_service cached cached.bench "$ORIGIN_PORT" true >>"$data/$1.toml"
}
node_config on "$ON_PORT" true
node_config off "$OFF_PORT" false

start origin target/release/native-hello "127.0.0.1:$ORIGIN_PORT" "public, max-age=3600"
# The access log is off on both: only metrics differ.
RUST_LOG="info,access=off" start on target/release/edge-node serve --config "$data/on.toml"
RUST_LOG="info,access=off" start off target/release/edge-node serve --config "$data/off.toml"
for port in "$ON_PORT" "$OFF_PORT"; do
  for host in hello.bench cached.bench; do
    wait_for "$host on port $port" "http://127.0.0.1:$port/" -H "Host: $host"
  done
done

echo "warming up..." >&2
for port in "$ON_PORT" "$OFF_PORT"; do
  for host in hello.bench cached.bench; do
    warm_up -H "Host: $host" "http://127.0.0.1:$port/"
  done
done

printf '\nwrk -t%s -c%s -d%s per run, HTTP/1.1 keep-alive, 127.0.0.1, %s cores\n\n' \
  "$THREADS" "$CONNECTIONS" "$DURATION" "$(nproc)"
printf '%-12s %6s %14s %14s\n' "" "round" "metrics on" "metrics off"
declare -A total=([hello.on]=0 [hello.off]=0 [cached.on]=0 [cached.off]=0)
for round in $(seq "$ROUNDS"); do
  for host in hello.bench cached.bench; do
    name="${host%.bench}"
    read -r on _ _ < <(wrk_figures "$CONNECTIONS" -H "Host: $host" "http://127.0.0.1:$ON_PORT/")
    read -r off _ _ < <(wrk_figures "$CONNECTIONS" -H "Host: $host" "http://127.0.0.1:$OFF_PORT/")
    printf '%-12s %6s %14.0f %14.0f\n' "$name" "$round" "$on" "$off"
    total[$name.on]="$(awk -v a="${total[$name.on]}" -v b="$on" 'BEGIN { print a + b }')"
    total[$name.off]="$(awk -v a="${total[$name.off]}" -v b="$off" 'BEGIN { print a + b }')"
  done
done
echo
for name in hello cached; do
  printf 'ratio metrics on / off, %-7s %s\n' "$name:" "$(ratio "${total[$name.on]}" "${total[$name.off]}")"
done
echo "target: >= 0.95"

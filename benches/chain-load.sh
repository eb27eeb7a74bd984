#!/usr/bin/env bash
# Service chaining: the cost of one chained call. Three ways to the same
# answer (examples/hello), on one node, in one run:
#
#   direct    hello, as the client's request reaches it
#   gate      the auth gate (examples/auth) alone: it checks the bearer
#             token and answers /whoami itself, calling nothing
#   chained   the same gate calling hello as a service backend: two
#             instances, in process, no socket
#   loopback  the same gate calling hello as an origin backend over HTTP on
#             127.0.0.1: what chaining costs without in-process calls
#
# One chained call costs chained - gate (the callee's execution included),
# against loopback - gate for the same call over HTTP, and direct for the
# callee served to a client.
#
# Every figure is a median over ROUNDS rounds, the order rotated each round,
# with the node's CPU per client request (utime + stime from /proc).
#
#   benches/chain-load.sh
#   ROUNDS=5 DURATION=10s benches/chain-load.sh
#
# Everything runs on 127.0.0.1 and stops by itself; only the processes this
# script starts are stopped.
DURATION="${DURATION:-8s}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-3}"
NODE_PORT="${NODE_PORT:-18094}"
ADMIN_PORT="${ADMIN_PORT:-19094}"
TOKEN="bench-token-0123456789"

prepare

cat >"$data/node.toml" <<TOML
[node]
listen = "127.0.0.1:$NODE_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
data_dir = "$data/node"

[http]
max_in_flight_requests_per_tenant = 1000

# As in load.sh: the figures are costs, not limits. (At a node's cold start
# a first instantiation into a fresh pool slot has been seen charged past
# the default 50 ms, twice in 1.6 million requests.)

[[service]]
name = "hello"
tenant = "bench"
domains = ["hello.bench"]
module = "$root/target/guests/hello.wasm"
limits = { cpu_budget_ms = 1000 }

[[service]]
name = "chained"
tenant = "bench"
domains = ["chained.bench"]
module = "$root/target/guests/auth.wasm"
config = { auth_token = "$TOKEN" }
limits = { cpu_budget_ms = 1000 }
[service.backend.app]
service = "hello"

[[service]]
name = "loopback"
tenant = "bench"
domains = ["loopback.bench"]
module = "$root/target/guests/auth.wasm"
config = { auth_token = "$TOKEN" }
limits = { cpu_budget_ms = 1000 }
[service.backend.app]
origin = "http://127.0.0.1:$NODE_PORT"
host_header = "hello.bench"
allow_private_addresses = true
cache = "off"
TOML
RUST_LOG="info,access=off" start node target/release/edge-node serve --config "$data/node.toml"
node_pid="${pids[0]}"

url="http://127.0.0.1:$NODE_PORT/"
auth=(-H "Authorization: Bearer $TOKEN")
for name in hello chained loopback; do
  wait_for "$name" "$url" -H "Host: $name.bench" "${auth[@]}"
done
curl -sS -o /dev/null -w '%{http_code}' -H "Host: chained.bench" "$url" | grep -q 401 \
  || { echo "the gate let a request without its token through" >&2; exit 1; }

servers=("direct hello /" "gate chained /whoami" "chained chained /" "loopback loopback /")
echo "warming up..." >&2
for server in "${servers[@]}"; do
  read -r _ host path <<<"$server"
  warm_up -H "Host: $host.bench" "${auth[@]}" "$url${path#/}"
done

results="$data/results"
count="${#servers[@]}"
for round in $(seq "$ROUNDS"); do
  for step in $(seq 0 $((count - 1))); do
    read -r name host path <<<"${servers[$(((step + round) % count))]}"
    before="$(ticks "$node_pid")"
    out="$(wrk_run "$CONNECTIONS" -H "Host: $host.bench" "${auth[@]}" "$url${path#/}")"
    read -r rps p50 p99 requests <<<"$(wrk_parse <<<"$out")"
    after="$(ticks "$node_pid")"
    awk -v n="$name" -v r="$round" -v rps="$rps" -v p50="$p50" -v p99="$p99" -v req="$requests" \
        -v cpu="$((after - before))" -v hz="$hz" \
        'BEGIN { printf "%s %s %.0f %s %s %.1f\n", n, r, rps, p50, p99, cpu / hz * 1e6 / req }' \
      | tee -a "$results" >&2
  done
done

column_median() { awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$results" | median; }

printf '\n%s rounds, rotated; wrk -t%s -c%s -d%s over HTTP/1.1; 127.0.0.1, %s cores\n\n' \
  "$ROUNDS" "$THREADS" "$CONNECTIONS" "$DURATION" "$(nproc)"
printf '%-10s %10s %8s %8s %10s %16s\n' "path" "req/s" "p50 ms" "p99 ms" "of direct" "CPU µs/request"
direct_rps="$(column_median direct 3)"
direct_cpu="$(column_median direct 6)"
for server in "${servers[@]}"; do
  read -r name _ _ <<<"$server"
  rps="$(column_median "$name" 3)"
  printf '%-10s %10.0f %8s %8s %10s %16.1f\n' "$name" "$rps" "$(column_median "$name" 4)" \
    "$(column_median "$name" 5)" "$(ratio "$rps" "$direct_rps")" "$(column_median "$name" 6)"
done
chained_cpu="$(column_median chained 6)"
gate_cpu="$(column_median gate 6)"
loopback_cpu="$(column_median loopback 6)"
awk -v c="$chained_cpu" -v d="$direct_cpu" -v g="$gate_cpu" -v l="$loopback_cpu" 'BEGIN {
  printf "\none chained call, the callee'"'"'s execution included (chained - gate): %.1f µs of node CPU\n", c - g
  printf "the same call over loopback HTTP (loopback - gate): %.1f µs; hello served to a client (direct): %.1f µs\n", l - g, d
}'

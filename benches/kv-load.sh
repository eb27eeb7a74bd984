#!/usr/bin/env bash
# KV read load: a guest that reads one key per request from its KV store
# (examples/state, GET /kv/greeting: wasi:keyvalue from the node's replica)
# against hello on the same node, in one run. A control plane and one node
# follow each other on loopback, as deployed (release builds); the key is
# written through edgectl first. Every figure is a median over ROUNDS
# rounds, the order rotated each round, with the node's CPU per request.
#
#   benches/kv-load.sh
#   ROUNDS=5 DURATION=10s benches/kv-load.sh
#
# Everything runs on 127.0.0.1 and stops by itself; only the processes this
# script starts are stopped.
DURATION="${DURATION:-8s}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-3}"
PLANE_PORT="${PLANE_PORT:-17070}"
NODE_PORT="${NODE_PORT:-18090}"
ADMIN_PORT="${ADMIN_PORT:-19090}"

prepare -p control-plane --bin control-plane -p edgectl --bin edgectl

bin="$root/target/release"
export EDGE_ADMIN_TOKEN="admin-token-for-the-kv-benchmark"
export EDGE_CLUSTER_TOKEN="cluster-token-for-the-kv-benchmark"
export EDGECTL_CONFIG="$data/edgectl.json"
api="http://127.0.0.1:$PLANE_PORT"
head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n" > "$data/secrets.key"
start plane "$bin/control-plane" serve --listen "127.0.0.1:$PLANE_PORT" \
  --data-dir "$data/plane" --secrets-key-file "$data/secrets.key"
for _ in $(seq 100); do curl -fsS "$api/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

cat >"$data/node.toml" <<TOML
[node]
listen = "127.0.0.1:$NODE_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
data_dir = "$data/node"
secrets_key_file = "$data/secrets.key"

[http]
max_in_flight_requests_per_tenant = 1000

[control_plane]
url = "$api"
cluster_token = "$EDGE_CLUSTER_TOKEN"
node_name = "bench-node"
TOML
RUST_LOG="info,access=off" start node "$bin/edge-node" serve --config "$data/node.toml"
node_pid="${pids[1]}"

token="$("$bin/edgectl" tenant-create bench --url "$api")"
"$bin/edgectl" login --url "$api" --token "$token" >/dev/null
"$bin/edgectl" kv create counters >/dev/null
"$bin/edgectl" kv put counters greeting "hello from the edge"
"$bin/edgectl" service create hello >/dev/null
"$bin/edgectl" service create state --kv-store counters >/dev/null
"$bin/edgectl" deploy hello --wasm target/guests/hello.wasm >/dev/null
"$bin/edgectl" deploy state --wasm target/guests/state.wasm >/dev/null

url="http://127.0.0.1:$NODE_PORT"
for target in "hello.bench.localhost /" "state.bench.localhost /kv/greeting"; do
  read -r host path <<<"$target"
  for _ in $(seq 300); do
    curl -fsS -H "Host: $host" "$url$path" 2>/dev/null | grep -q "hello from the edge" && break
    sleep 0.1
  done
  curl -fsS -H "Host: $host" "$url$path" | grep -q "hello from the edge" \
    || { echo "$host$path does not answer" >&2; cat "$data"/*.log >&2; exit 1; }
done

servers=("hello hello.bench.localhost /" "kv-read state.bench.localhost /kv/greeting")
echo "warming up..." >&2
for server in "${servers[@]}"; do
  read -r _ host path <<<"$server"
  warm_up -H "Host: $host" "$url$path"
done

results="$data/results"
count="${#servers[@]}"
for round in $(seq "$ROUNDS"); do
  for step in $(seq 0 $((count - 1))); do
    read -r name host path <<<"${servers[$(((step + round) % count))]}"
    before="$(ticks "$node_pid")"
    out="$(wrk_run "$CONNECTIONS" -H "Host: $host" "$url$path")"
    read -r rps _ p99 requests <<<"$(wrk_parse <<<"$out")"
    after="$(ticks "$node_pid")"
    awk -v n="$name" -v r="$round" -v rps="$rps" -v p99="$p99" -v req="$requests" \
        -v cpu="$((after - before))" -v hz="$hz" \
        'BEGIN { printf "%s %s %.0f %s %.1f\n", n, r, rps, p99, cpu / hz * 1e6 / req }' \
      | tee -a "$results" >&2
  done
done

column_median() { awk -v n="$1" -v c="$2" '$1 == n { print $c }' "$results" | median; }

printf '\n%s rounds, rotated; wrk -t%s -c%s -d%s over HTTP/1.1; 127.0.0.1, %s cores\n\n' \
  "$ROUNDS" "$THREADS" "$CONNECTIONS" "$DURATION" "$(nproc)"
printf '%-10s %10s %8s %10s %16s\n' "guest" "req/s" "p99 ms" "of hello" "CPU µs/request"
hello_rps="$(column_median hello 3)"
for server in "${servers[@]}"; do
  read -r name _ _ <<<"$server"
  rps="$(column_median "$name" 3)"
  printf '%-10s %10.0f %8s %10s %16.1f\n' "$name" "$rps" "$(column_median "$name" 4)" \
    "$(ratio "$rps" "$hello_rps")" "$(column_median "$name" 5)"
done
echo "target: kv-read >= 0.80 of hello"

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
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

DURATION="${DURATION:-5s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
NODE_PORT="${NODE_PORT:-18180}"
ORIGIN_PORT="${ORIGIN_PORT:-18188}"
ADMIN_PORT="${ADMIN_PORT:-19180}"

scripts/install-toolchain.sh --bench
scripts/build-guests.sh >/dev/null
cargo build --release --quiet -p edge-node --bin edge-node -p edge-benches --bin native-hello

data="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

cat >"$data/node.toml" <<TOML
[node]
listen = "127.0.0.1:$NODE_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
data_dir = "$data/node"

[[service]]
name = "hello"
domains = ["hello.bench"]
module = "$root/target/guests/hello.wasm"

[[service]]
name = "cached"
domains = ["cached.bench"]
module = "$root/target/guests/caching-proxy.wasm"
[service.backend.origin]
origin = "http://127.0.0.1:$ORIGIN_PORT"
allow_private_addresses = true

[[service]]
name = "fetch"
domains = ["fetch.bench"]
module = "$root/target/guests/caching-proxy.wasm"
[service.backend.origin]
origin = "http://127.0.0.1:$ORIGIN_PORT"
allow_private_addresses = true
cache = "off"
TOML

target/release/native-hello "127.0.0.1:$ORIGIN_PORT" "max-age=3600" >/dev/null &
pids+=($!)
target/release/edge-node serve --config "$data/node.toml" 2>"$data/node.log" >/dev/null &
pids+=($!)

for host in hello.bench cached.bench fetch.bench; do
  for _ in $(seq 100); do
    curl -fsS -H "Host: $host" "http://127.0.0.1:$NODE_PORT/" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS -H "Host: $host" "http://127.0.0.1:$NODE_PORT/" | grep -q "hello from the edge" \
    || { echo "$host did not answer" >&2; cat "$data/node.log" >&2; exit 1; }
done

# run_wrk PORT HOST CONNECTIONS -> prints "REQ_PER_SEC P50_MS P99_MS"
run_wrk() {
  local out
  local threads="$THREADS"
  [ "$3" -lt "$threads" ] && threads="$3"
  out="$(wrk -t"$threads" -c"$3" -d"$DURATION" --latency -H "Host: $2" "http://127.0.0.1:$1/")"
  if grep -q "Non-2xx" <<<"$out"; then
    echo "$out" >&2
    echo "non-2xx responses from $2" >&2
    exit 1
  fi
  awk '
    function ms(v) {
      if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
      if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
      if (v ~ /s$/) { sub(/s$/, "", v); return v * 1000 }
      return v
    }
    /^Requests\/sec:/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    END { printf "%s %.3f %.3f\n", rps, p50, p99 }' <<<"$out"
}

echo "warming up..." >&2
for host in hello.bench cached.bench fetch.bench; do
  wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -H "Host: $host" "http://127.0.0.1:$NODE_PORT/" >/dev/null
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
awk -v h="$hello_rps" -v c="$hit_rps" 'BEGIN { printf "ratio cache hit / hello: %.2f (target >= 0.70)\n", c / h }'
awk -v f="$fetch_l50" -v h="$hello_l50" -v o="$origin_l50" 'BEGIN {
  printf "backend fetch, c=1 p50: %.3f ms through the node vs %.3f ms to the origin directly;\n", f, o
  printf "  the fetch adds %.3f ms over the hello guest, %.3f ms over a direct request\n", f - h, f - o }'

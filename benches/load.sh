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
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
NODE_PORT="${NODE_PORT:-18080}"
NATIVE_PORT="${NATIVE_PORT:-18088}"
ADMIN_PORT="${ADMIN_PORT:-19080}"

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

target/release/native-hello "127.0.0.1:$NATIVE_PORT" >/dev/null &
pids+=($!)
target/release/edge-node serve --module target/guests/hello.wasm \
  --listen "127.0.0.1:$NODE_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --data-dir "$data" 2>"$data/node.log" >/dev/null &
pids+=($!)

for port in "$NATIVE_PORT" "$NODE_PORT"; do
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$port/" | grep -q "hello from the edge" \
    || { echo "server on port $port did not answer" >&2; exit 1; }
done

# run_wrk PORT -> prints "REQ_PER_SEC P99_MS"
run_wrk() {
  local out
  out="$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$1/")"
  if grep -q "Non-2xx" <<<"$out"; then
    echo "$out" >&2
    echo "non-2xx responses from port $1" >&2
    exit 1
  fi
  local rps p99
  rps="$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")"
  p99="$(awk '$1 == "99%" { v = $2;
      if (v ~ /us$/) { sub(/us$/, "", v); v = v / 1000 }
      else if (v ~ /ms$/) { sub(/ms$/, "", v) }
      else if (v ~ /s$/) { sub(/s$/, "", v); v = v * 1000 }
      printf "%.2f", v }' <<<"$out")"
  echo "$rps $p99"
}

echo "warming up..." >&2
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "http://127.0.0.1:$NATIVE_PORT/" >/dev/null
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "http://127.0.0.1:$NODE_PORT/" >/dev/null

read -r native_rps native_p99 < <(run_wrk "$NATIVE_PORT")
read -r node_rps node_p99 < <(run_wrk "$NODE_PORT")

printf '\nwrk -t%s -c%s -d%s, HTTP/1.1 keep-alive, 127.0.0.1, %s cores\n\n' \
  "$THREADS" "$CONNECTIONS" "$DURATION" "$(nproc)"
printf '%-34s %12s %10s\n' "server" "req/s" "p99 ms"
printf '%-34s %12.0f %10s\n' "native hyper hello (baseline)" "$native_rps" "$native_p99"
printf '%-34s %12.0f %10s\n' "edge node, hello guest" "$node_rps" "$node_p99"
awk -v n="$node_rps" -v b="$native_rps" 'BEGIN { printf "\nratio node / native: %.2f\n", n / b }'

#!/usr/bin/env bash
# A/B load benchmark of two edge-node builds, in one run: both serve the
# hello guest side by side, and wrk (HTTP/1.1 keep-alive) alternates between
# them for ROUNDS rounds, the order rotated each round. Prints req/s, p99 and
# the server's CPU per request (utime + stime from /proc) for each, then the
# medians and the ratio B / A.
#
#   benches/ab-node.sh BASELINE_BINARY CANDIDATE_BINARY
#   ROUNDS=5 DURATION=10s benches/ab-node.sh /tmp/edge-node-old target/release/edge-node
#   GUEST=cached benches/ab-node.sh ...   # the caching-proxy guest, every
#                                         # request a hit in the HTTP cache
#
# Everything runs on 127.0.0.1 and stops by itself; only the processes this
# script starts are stopped.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ $# -eq 2 ] || { echo "usage: $0 BASELINE_BINARY CANDIDATE_BINARY" >&2; exit 2; }
ROUNDS="${ROUNDS:-4}"
scripts/build-guests.sh >/dev/null

GUEST="${GUEST:-hello}"
ports=(18280 18281)
admins=(19280 19281)
bins=("$1" "$2")
names=(A B)
server_pids=()
host="shop.test"
if [ "$GUEST" = cached ]; then
  host="cached.bench"
  origin_port=18288
  cargo build --release -p edge-benches --bin native-hello >/dev/null 2>&1
  start origin target/release/native-hello "127.0.0.1:$origin_port" "max-age=3600"
fi
for i in 0 1; do
  if [ "$GUEST" = cached ]; then
    cat >"$data/node-$i.toml" <<TOML
[node]
listen = "127.0.0.1:${ports[$i]}"
admin_listen = "127.0.0.1:${admins[$i]}"
data_dir = "$data/node-$i"
TOML
    proxy_service cached cached.bench "$origin_port" >>"$data/node-$i.toml"
    RUST_LOG="info,access=off" start "node-${names[$i]}" "${bins[$i]}" serve --config "$data/node-$i.toml"
  else
    RUST_LOG="info,access=off" start "node-${names[$i]}" "${bins[$i]}" serve \
      --module target/guests/hello.wasm \
      --listen "127.0.0.1:${ports[$i]}" --admin-listen "127.0.0.1:${admins[$i]}" \
      --data-dir "$data/node-$i"
  fi
  server_pids+=("${pids[-1]}")
done
for i in 0 1; do
  wait_for "node ${names[$i]}" "http://127.0.0.1:${ports[$i]}/" -H "Host: $host"
  warm_up -H "Host: $host" "http://127.0.0.1:${ports[$i]}/"
done

results="$data/results"
for round in $(seq "$ROUNDS"); do
  order=(0 1)
  [ $((round % 2)) -eq 0 ] && order=(1 0)
  for i in "${order[@]}"; do
    before="$(ticks "${server_pids[$i]}")"
    out="$(wrk_run "$CONNECTIONS" -H "Host: $host" "http://127.0.0.1:${ports[$i]}/")"
    after="$(ticks "${server_pids[$i]}")"
    read -r rps _ p99 requests < <(wrk_parse <<<"$out")
    awk -v name="${names[$i]}" -v round="$round" -v rps="$rps" -v p99="$p99" \
        -v req="$requests" -v cpu="$(( after - before ))" -v hz="$hz" \
        'BEGIN { printf "%s %s %.0f %.2f %.1f\n", name, round, rps, p99, cpu / hz * 1e6 / req }' \
      | tee -a "$results"
  done
done

printf '\nwrk -t%s -c%s -d%s, HTTP/1.1 keep-alive, %s guest, %s rounds, %s cores\n\n' \
  "$THREADS" "$CONNECTIONS" "$DURATION" "$GUEST" "$ROUNDS" "$(nproc)"
printf '%-4s %12s %10s %16s\n' "" "req/s" "p99 ms" "CPU µs/request"
for name in A B; do
  rps="$(awk -v n="$name" '$1 == n { print $3 }' "$results" | median)"
  p99="$(awk -v n="$name" '$1 == n { print $4 }' "$results" | median)"
  cpu="$(awk -v n="$name" '$1 == n { print $5 }' "$results" | median)"
  printf '%-4s %12.0f %10.2f %16.1f\n' "$name" "$rps" "$p99" "$cpu"
  eval "rps_$name=$rps cpu_$name=$cpu"
done
printf '\nB / A: req/s %s, CPU per request %s\n' "$(ratio "$rps_B" "$rps_A")" "$(ratio "$cpu_B" "$cpu_A")"

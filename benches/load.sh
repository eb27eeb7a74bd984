#!/usr/bin/env bash
# Load benchmark: native-hello, a plain hyper server giving the same answer,
# against the edge node serving guests (a fresh instance per request), in one
# run. This machine is shared and noisy, so every figure is a median over
# ROUNDS rounds, the order of the servers rotated each round, and each row
# has the server's CPU per request (utime + stime from /proc) beside its
# req/s. Each server is loaded over HTTP/1.1 keep-alive (wrk) and HTTP/2
# cleartext (h2load, 10 streams per connection).
#
#   benches/load.sh                        # 3 rounds of 8 s, hello and plain-wasi
#   ROUNDS=5 DURATION=10s benches/load.sh
#   GUESTS="hello plain-wasi python-hello" PROTOCOLS=h1 benches/load.sh
#
# Guests are the components in target/guests/ (scripts/build-guests.sh);
# `plain-wasi` is written against the `wasi` crate alone, the same component
# any wasi:http host runs. Everything runs on 127.0.0.1 and stops by itself;
# only the processes this script starts are stopped.
DURATION="${DURATION:-8s}"
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROUNDS="${ROUNDS:-3}"
GUESTS="${GUESTS:-hello plain-wasi}"
PROTOCOLS="${PROTOCOLS:-h1 h2}"
NODE_PORT="${NODE_PORT:-18080}"
NATIVE_PORT="${NATIVE_PORT:-18088}"
ADMIN_PORT="${ADMIN_PORT:-19080}"

prepare

cat >"$data/node.toml" <<TOML
[node]
listen = "127.0.0.1:$NODE_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
data_dir = "$data/node"

# h2load keeps 640 streams open (64 connections x 10) at one service: more
# than the per-tenant bound of 500 in flight, which a slower guest (or a
# slow moment of this machine) reaches, and then the run would measure
# cheap 503s. The benchmark measures serving, not admission.
[http]
max_in_flight_requests_per_tenant = 1000
TOML
for guest in $GUESTS; do
  [ -f "target/guests/$guest.wasm" ] || { echo "no guest target/guests/$guest.wasm" >&2; exit 1; }
  # An interpreter's guest (Python) takes more than the default 50 ms to
  # start its runtime in a fresh instance.
  cat >>"$data/node.toml" <<TOML

[[service]]
name = "$guest"
domains = ["$guest.bench"]
module = "$root/target/guests/$guest.wasm"
limits = { cpu_budget_ms = 1000 }
TOML
done

start native target/release/native-hello "127.0.0.1:$NATIVE_PORT"
# The access log is off, as it is for the baseline.
RUST_LOG="info,access=off" start node target/release/edge-node serve --config "$data/node.toml"
native_pid="${pids[0]}"
node_pid="${pids[1]}"

# answers URL [curl args...] : waits up to 30 s (a large guest compiles
# first) for a 200 at URL.
answers() {
  local url="$1"; shift
  for _ in $(seq 300); do
    curl -fsS -o /dev/null "$@" "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no answer at $url $*" >&2; cat "$data"/*.log >&2 || true; exit 1
}

# One row per server: "name host pid"; native answers any Host.
servers=("native native.bench $native_pid")
answers "http://127.0.0.1:$NATIVE_PORT/"
for guest in $GUESTS; do
  answers "http://127.0.0.1:$NODE_PORT/" -H "Host: $guest.bench"
  servers+=("$guest $guest.bench $node_pid")
done

echo "warming up..." >&2
for server in "${servers[@]}"; do
  read -r name host _ <<<"$server"
  port="$NODE_PORT"; [ "$name" = native ] && port="$NATIVE_PORT"
  warm_up -H "Host: $host" "http://127.0.0.1:$port/"
done

# h2load_run PORT HOST -> "REQ_PER_SEC REQUESTS"; fails on any non-2xx
# answer. (In duration mode h2load counts the requests it abandons at the
# end as failed, so only the status classes are checked.)
h2load_run() {
  local out
  out="$(h2load -t"$THREADS" -c"$CONNECTIONS" -m10 -D"${DURATION%s}" \
    -H ":authority: $2" "http://127.0.0.1:$1/" 2>&1)"
  grep -q "0 3xx, 0 4xx, 0 5xx" <<<"$out" \
    || { echo "$out" >&2; echo "non-2xx answers from $2 over HTTP/2" >&2; exit 1; }
  awk '/^finished in/ { gsub(",", "", $4); rps = $4 }
       /^requests:/ { succeeded = $8 }
       END { print rps, succeeded }' <<<"$out"
}

results="$data/results"
count="${#servers[@]}"
for round in $(seq "$ROUNDS"); do
  for protocol in $PROTOCOLS; do
    for step in $(seq 0 $((count - 1))); do
      read -r name host pid <<<"${servers[$(((step + round) % count))]}"
      port="$NODE_PORT"; [ "$name" = native ] && port="$NATIVE_PORT"
      before="$(ticks "$pid")"
      # Assigned, not read from a process substitution, so that a
      # failed run stops the script.
      if [ "$protocol" = h1 ]; then
        out="$(wrk_run "$CONNECTIONS" -H "Host: $host" "http://127.0.0.1:$port/")"
        read -r rps _ p99 requests <<<"$(wrk_parse <<<"$out")"
      else
        out="$(h2load_run "$port" "$host")"
        read -r rps requests <<<"$out"
        p99="-"
      fi
      after="$(ticks "$pid")"
      awk -v n="$name" -v p="$protocol" -v r="$round" -v rps="$rps" -v p99="$p99" \
          -v req="$requests" -v cpu="$((after - before))" -v hz="$hz" \
          'BEGIN { printf "%s %s %s %.0f %s %.1f\n", n, p, r, rps, p99, cpu / hz * 1e6 / req }' \
        | tee -a "$results" >&2
    done
  done
done

column_median() { awk -v n="$1" -v p="$2" -v c="$3" '$1 == n && $2 == p { print $c }' "$results" | median; }

printf '\n%s rounds, servers rotated; HTTP/1.1: wrk -t%s -c%s -d%s; HTTP/2: h2load -c%s -m10 (h2c); 127.0.0.1, %s cores\n\n' \
  "$ROUNDS" "$THREADS" "$CONNECTIONS" "$DURATION" "$CONNECTIONS" "$(nproc)"
printf '%-14s %-9s %10s %8s %10s %16s\n' "server" "protocol" "req/s" "p99 ms" "of native" "CPU µs/request"
for protocol in $PROTOCOLS; do
  native_rps="$(column_median native "$protocol" 4)"
  for server in "${servers[@]}"; do
    read -r name _ _ <<<"$server"
    rps="$(column_median "$name" "$protocol" 4)"
    p99="-"; [ "$protocol" = h1 ] && p99="$(column_median "$name" "$protocol" 5)"
    printf '%-14s %-9s %10.0f %8s %10s %16.1f\n' "$name" "$protocol" "$rps" "$p99" \
      "$(ratio "$rps" "$native_rps")" "$(column_median "$name" "$protocol" 6)"
  done
done

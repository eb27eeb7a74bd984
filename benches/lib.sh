# Shared by the load benchmarks (sourced, not run): strict mode (which the
# helpers rely on to stop a benchmark at the first failure), the
# repository root ($root, made the working directory), the scratch
# directory, the processes a benchmark starts (stopped by PID when it
# exits), waiting for a server, and wrk's figures.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   start native target/release/native-hello 127.0.0.1:18088
#   wait_for "native hello" http://127.0.0.1:18088/
#   read -r rps p50 p99 < <(wrk_figures 64 -H "Host: x" http://127.0.0.1:18088/)

set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"

data="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

# start NAME COMMAND ARGS... : runs the command in the background (stdout
# discarded, stderr to $data/NAME.log) and remembers its PID for cleanup.
start() {
  local name="$1"; shift
  "$@" >/dev/null 2>"$data/$name.log" &
  pids+=($!)
}

# wait_for WHAT URL [curl args...] : waits up to 10 s for a "hello from the
# edge" answer at URL.
wait_for() {
  local what="$1" url="$2"; shift 2
  for _ in $(seq 100); do
    curl -fsS "$@" "$url" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "$@" "$url" | grep -q "hello from the edge" \
    || { echo "$what did not answer at $url" >&2; cat "$data"/*.log >&2 || true; exit 1; }
}

# wrk_figures CONNECTIONS [wrk args...] URL -> "REQ_PER_SEC P50_MS P99_MS".
# Fails on any non-2xx answer.
wrk_figures() {
  local out
  out="$(wrk_run "$@")"
  wrk_parse <<<"$out" | awk '{ print $1, $2, $3 }'
}

# wrk_run CONNECTIONS [wrk args...] URL -> wrk's own output. Fails on any
# non-2xx answer.
wrk_run() {
  local connections="$1"; shift
  local threads="$THREADS" out
  [ "$connections" -lt "$threads" ] && threads="$connections"
  out="$(wrk -t"$threads" -c"$connections" -d"$DURATION" --latency "$@")"
  if grep -q "Non-2xx" <<<"$out"; then
    echo "$out" >&2
    echo "non-2xx responses: wrk $*" >&2
    exit 1
  fi
  printf '%s\n' "$out"
}

# wrk_parse < WRK_OUTPUT -> "REQ_PER_SEC P50_MS P99_MS REQUESTS".
wrk_parse() {
  awk '
    function ms(v) {
      if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
      if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
      if (v ~ /s$/) { sub(/s$/, "", v); return v * 1000 }
      return v
    }
    /^Requests\/sec:/ { rps = $2 }
    /requests in/ { requests = $1 }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    END { printf "%s %.3f %.3f %s\n", rps, p50, p99, requests }'
}

# warm_up [wrk args...] URL : 2 s of load, figures discarded.
warm_up() {
  wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$@" >/dev/null
}

# ticks PID -> the CPU clock ticks (utime + stime) the process has used;
# $hz of them make a second.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hz="$(getconf CLK_TCK)"

# median < NUMBERS (one per line) -> their median.
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ratio A B -> A / B with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# prepare [CARGO_BUILD_ARGS...] : installs the load tools, builds the
# guests, and builds in release what every benchmark runs (the node and
# native-hello) and any further targets named.
prepare() {
  scripts/install-toolchain.sh --bench
  scripts/build-guests.sh >/dev/null
  cargo build --release --quiet -p edge-node --bin edge-node -p edge-benches --bin native-hello "$@"
}

# proxy_service NAME DOMAIN ORIGIN_PORT [CACHE_RESPONSES [CACHE]] -> a node
# config's [[service]] for the caching-proxy guest on DOMAIN, its backend
# the origin on ORIGIN_PORT. CACHE_RESPONSES "true": the edge keeps the
# guest's public answers and serves them without the guest (the service's
# `cache_responses`); CACHE: the backend's cache setting, e.g. "off".
proxy_service() {
  cat <<TOML

[[service]]
name = "$1"
domains = ["$2"]
module = "$root/target/guests/caching-proxy.wasm"
TOML
  if [ "${4:-false}" = true ]; then echo "cache_responses = true"; fi
  cat <<TOML
[service.backend.origin]
origin = "http://127.0.0.1:$3"
allow_private_addresses = true
TOML
  if [ -n "${5:-}" ]; then echo "cache = \"$5\""; fi
}

#!/usr/bin/env bash
# Starts the platform with its embedded defaults: a control plane (SQLite in
# target/platform), one edge node following it, and an example tenant with
# five services deployed through edgectl: hello, echo, a caching proxy in
# front of a small origin (scripts/example-origin.py), and state (a KV
# store, a config flag and a secret), and gate (a bearer-token gate calling
# hello in process). Ctrl-C stops everything.
#
#   control plane  https://127.0.0.1:7070  (API, /openapi.json; a development
#                                          CA in target/platform/ca signs it)
#   edge node      http://127.0.0.1:8080   (metrics on 127.0.0.1:9090)
#                  https://127.0.0.1:8443  (HTTP/1.1, HTTP/2; HTTP/3 on UDP 8443)
#   origin         http://127.0.0.1:8000   (behind the proxy service)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/install-toolchain.sh
scripts/build-guests.sh >/dev/null
cargo build --quiet -p edge-node -p control-plane -p edgectl

data="$root/target/platform"
rm -rf "$data"
mkdir -p "$data"
token() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
export EDGE_ADMIN_TOKEN="admin-$(token)"
export EDGE_CLUSTER_TOKEN="cluster-$(token)"
export EDGECTL_CONFIG="$data/edgectl.json"
bin="$root/target/debug"
# The control plane serves HTTPS with a certificate of a development CA
# made here; the node and edgectl trust that CA and nothing else for it.
ca="$data/ca"
"$bin/control-plane" dev-certificates --out-dir "$ca" >/dev/null
export EDGECTL_CA_FILE="$ca/ca.pem"
api="https://127.0.0.1:7070"
# The operator's key for tenants' secrets, shared by the control plane and
# the node.
secrets_key="$data/secrets.key"
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n" > "$secrets_key")

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$bin/control-plane" serve --listen 127.0.0.1:7070 --data-dir "$data/control-plane" \
  --tls-cert "$ca/cert.pem" --tls-key "$ca/key.pem" --secrets-key-file "$secrets_key" \
  >"$data/control-plane.out" 2>"$data/control-plane.log" &
pids+=($!)
for _ in $(seq 100); do
  curl -fsS --cacert "$ca/ca.pem" "$api/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS --cacert "$ca/ca.pem" "$api/healthz" >/dev/null \
  || { echo "the control plane did not start; see $data/control-plane.log" >&2; exit 1; }

cat >"$data/node.toml" <<TOML
[node]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9090"
data_dir = "$data/node"
secrets_key_file = "$secrets_key"

[tls]
listen = "127.0.0.1:8443"

[control_plane]
url = "$api"
ca_file = "$ca/ca.pem"
cluster_token = "$EDGE_CLUSTER_TOKEN"
node_name = "local-node"
TOML
"$bin/edge-node" serve --config "$data/node.toml" >"$data/node.out" 2>"$data/node.log" &
pids+=($!)
python3 scripts/example-origin.py 8000 2>"$data/origin.log" &
pids+=($!)

# The example tenant's origin runs on loopback, which only tenants the
# operator allows may reach.
tenant_token="$("$bin/edgectl" tenant-create example --allow-private-backends --url "$api")"
"$bin/edgectl" login --url "$api" --token "$tenant_token" >/dev/null
# Each service answers on <service>.example.localhost (the platform domain
# is localhost); custom domains wait for proof of ownership.
"$bin/edgectl" service create hello >/dev/null
"$bin/edgectl" service create echo --domain 'echo.example.test' >/dev/null
"$bin/edgectl" service create proxy \
  --backend origin=http://127.0.0.1:8000 --allow-private-addresses >/dev/null
"$bin/edgectl" deploy hello --wasm target/guests/hello.wasm
"$bin/edgectl" deploy echo --wasm target/guests/echo.wasm
"$bin/edgectl" deploy proxy --wasm target/guests/caching-proxy.wasm
"$bin/edgectl" kv create counters >/dev/null
printf %s "example-api-key" | "$bin/edgectl" secret set api_key >/dev/null
"$bin/edgectl" service create state --kv-store counters --secret api_key \
  --config feature_x=on >/dev/null
"$bin/edgectl" deploy state --wasm target/guests/state.wasm
# A bearer-token gate in front of hello, calling it in process.
printf %s "example-token" | "$bin/edgectl" secret set auth_token >/dev/null
"$bin/edgectl" service create gate --secret auth_token --service-backend app=hello >/dev/null
"$bin/edgectl" deploy gate --wasm target/guests/auth.wasm

for _ in $(seq 100); do
  curl -fsS -H 'Host: hello.example.localhost' http://127.0.0.1:8080/ >/dev/null 2>&1 && break
  sleep 0.1
done

cat <<TRY

The platform is running: control plane on https://127.0.0.1:7070 (CA:
$ca/ca.pem), one edge node on
127.0.0.1:8080, tenant "example" with services hello, echo, proxy,
state and gate. Try:

  curl http://hello.example.localhost:8080/
  curl -d 'some body' http://echo.example.localhost:8080/any/path?log=hi
  curl --http2-prior-knowledge http://echo.example.localhost:8080/h2
  curl -s http://127.0.0.1:9090/metrics | grep '^edge_requests_total'

Over TLS (the node's self-signed default certificate until a service
uploads its own with \`edgectl certificate upload\`):

  curl -k --http2 https://hello.example.localhost:8443/

The proxy service rewrites /blog/* to the origin's /posts/*, and the edge
caches what the origin allows (60 s here): ask twice, see the same time and
an Age header, then purge and ask again:

  curl -i http://proxy.example.localhost:8080/blog/hello
  EDGECTL_CONFIG=$EDGECTL_CONFIG EDGECTL_CA_FILE=$EDGECTL_CA_FILE \\
    target/debug/edgectl purge --surrogate-key post-hello --wait

A custom domain stays pending, and unrouted (421), until it is proved:
echo claimed echo.example.test (its deploy above printed the TXT record
that proves it). Add another with edgectl, see its record, and verify it:

  export EDGECTL_CONFIG=$EDGECTL_CONFIG EDGECTL_CA_FILE=$EDGECTL_CA_FILE
  target/debug/edgectl domain add echo www.example.test
  target/debug/edgectl domain list echo
  target/debug/edgectl domain verify echo www.example.test   # 409 until the TXT record exists

verify reads the record through the DNS server the operator names with
\`control-plane serve --dns-resolver IP:PORT\`; this local run names none,
so here the operator approves instead, and the domain is served from the
next snapshot:

  curl -H 'Host: echo.example.test' http://127.0.0.1:8080/      # 421
  target/debug/edgectl domain approve echo.example.test --admin-token $EDGE_ADMIN_TOKEN
  curl -H 'Host: echo.example.test' http://127.0.0.1:8080/      # 200

Deploy and roll back with edgectl (logged in as the example tenant):

  target/debug/edgectl deploy hello --build examples/streaming
  target/debug/edgectl versions hello
  target/debug/edgectl rollback hello
  target/debug/edgectl usage

State at the edge (examples/state): a visit counter in the KV store
"counters" (increments add up across nodes), keys read from the node's
replica, a flag from the service's config and an API key from a secret:

  curl http://state.example.localhost:8080/visits
  curl -X PUT -d 'hello' http://state.example.localhost:8080/kv/greeting
  curl http://state.example.localhost:8080/kv/greeting
  curl http://state.example.localhost:8080/flag
  curl -H 'x-api-key: example-api-key' http://state.example.localhost:8080/private
  target/debug/edgectl kv list counters
  target/debug/edgectl kv get counters visits

The gate (examples/auth) refuses requests without its token and calls
hello, in process, for the others:

  curl -i http://gate.example.localhost:8080/                                  # 401
  curl -H 'Authorization: Bearer example-token' http://gate.example.localhost:8080/

A canary: the echo guest as hello's next version, for 10 % of clients,
rolled back by the control plane if it fails more than the active one:

  target/debug/edgectl deploy hello --wasm target/guests/echo.wasm --canary 10 --sticky header:x-user
  for i in \$(seq 20); do curl -s -H "x-user: \$i" http://hello.example.localhost:8080/ | head -1; done
  target/debug/edgectl versions hello
  target/debug/edgectl promote hello          # or: abort

A new project, served on 127.0.0.1:8081 and again on every change:

  target/debug/edgectl init --lang rust mine && target/debug/edgectl dev mine --listen 127.0.0.1:8081

What the echo guest printed for ?log=hi, as its tenant sees it:

  target/debug/edgectl logs echo --follow

Metrics: scrape the node and the control plane with the shipped config and
open config/observability/grafana/edge-platform.json in Grafana:

  prometheus --config.file=config/observability/prometheus.yml \\
             --web.listen-address=127.0.0.1:9091

Admin token: $EDGE_ADMIN_TOKEN
Logs: $data/control-plane.log, $data/node.log, $data/origin.log.
Ctrl-C stops everything.
TRY
wait

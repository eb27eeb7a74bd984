#!/usr/bin/env bash
# TLS load benchmark: the edge node serving the hello guest over TLS against
# nginx (Debian package) returning the same static body over TLS, in the
# same run, with the same clients and the same ECDSA P-256 certificate:
#
#   HTTP/1.1 over TLS   wrk, keep-alive; the node twice: running the hello
#                       guest for every request, and answering from its edge
#                       cache (a static response the guest marked public,
#                       the `cache_responses` service setting)
#   HTTP/2 over TLS     h2load (nghttp2-client), 10 streams per connection
#   full handshakes     wrk with `Connection: close`: one TLS 1.3 handshake
#                       (no resumption) per request
#   HTTP/3              the node only (Debian's nginx has no HTTP/3):
#                       benches/examples/h3_load.rs, 10 streams per connection
#
# Prints req/s for each and the node / nginx ratio.
#
#   benches/tls-load.sh
#   DURATION=20s CONNECTIONS=128 benches/tls-load.sh
#
# Everything runs on 127.0.0.1 and stops by itself; only the processes this
# script starts are stopped.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
NODE_PORT="${NODE_PORT:-18443}"
NGINX_PORT="${NGINX_PORT:-18444}"
ORIGIN_PORT="${ORIGIN_PORT:-18445}"
NAME="bench.test"
CACHED="cached.bench.test"

prepare --example h3_load

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=$NAME" -addext "subjectAltName=DNS:$NAME" -addext "basicConstraints=critical,CA:FALSE" \
  -keyout "$data/key.pem" -out "$data/cert.pem" 2>/dev/null

cat >"$data/node.toml" <<TOML
[node]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
data_dir = "$data/node"

[tls]
listen = "127.0.0.1:$NODE_PORT"
default_certificate = { cert = "$data/cert.pem", key = "$data/key.pem" }

[[service]]
name = "hello"
domains = ["$NAME"]
module = "$root/target/guests/hello.wasm"
certificate = { cert = "$data/cert.pem", key = "$data/key.pem" }
TOML
# A static page: the caching proxy in front of an origin that marks it
# public; the edge keeps the guest's answer and serves it without the guest.
proxy_service cached "$CACHED" "$ORIGIN_PORT" true >>"$data/node.toml"
start origin target/release/native-hello "127.0.0.1:$ORIGIN_PORT" "public, max-age=3600"
# The access log is off, as nginx's is.
RUST_LOG="info,access=off" start node target/release/edge-node serve --config "$data/node.toml"

mkdir -p "$data/nginx"
cat >"$data/nginx/nginx.conf" <<NGINX
daemon off;
worker_processes $(nproc);
pid $data/nginx/nginx.pid;
error_log $data/nginx/error.log;
events { worker_connections 8192; }
http {
  access_log off;
  # Like the node, never close a busy connection after N requests.
  keepalive_requests 10000000;
  client_body_temp_path $data/nginx;
  proxy_temp_path $data/nginx;
  fastcgi_temp_path $data/nginx;
  uwsgi_temp_path $data/nginx;
  scgi_temp_path $data/nginx;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:SSL:10m;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl http2;
    server_name $NAME;
    ssl_certificate $data/cert.pem;
    ssl_certificate_key $data/key.pem;
    location / {
      default_type "text/plain; charset=utf-8";
      return 200 "hello from the edge\n";
    }
  }
}
NGINX
start nginx nginx -c "$data/nginx/nginx.conf"

for port in "$NODE_PORT" "$NGINX_PORT"; do
  wait_for "the server on port $port" "https://$NAME:$port/" -k --resolve "$NAME:$port:127.0.0.1"
done

# wrk_rps PORT HOST [extra wrk args] -> req/s; fails on any non-2xx answer.
wrk_rps() {
  local port="$1" host="$2"; shift 2
  wrk_figures "$CONNECTIONS" -H "Host: $host" "$@" "https://127.0.0.1:$port/" | cut -d' ' -f1
}

# h2load_rps PORT HOST -> req/s over HTTP/2; fails on any non-2xx answer.
# (In duration mode h2load counts the requests it abandons at the end as
# failed.)
h2load_rps() {
  local out seconds="${DURATION%s}"
  out="$(h2load -t"$THREADS" -c"$CONNECTIONS" -m10 -D"$seconds" \
    -H ":authority: $2" "https://127.0.0.1:$1/" 2>&1)"
  grep -q "h2" <<<"$(grep -i 'application protocol' <<<"$out")" \
    || { echo "$out" >&2; echo "HTTP/2 was not negotiated on port $1" >&2; exit 1; }
  grep -q "0 3xx, 0 4xx, 0 5xx" <<<"$out" \
    || { echo "$out" >&2; echo "non-2xx answers on port $1" >&2; exit 1; }
  awk '/^finished in/ { gsub(",", "", $4); print $4 }' <<<"$out"
}

echo "warming up..." >&2
for port in "$NODE_PORT" "$NGINX_PORT"; do
  warm_up -H "Host: $NAME" "https://127.0.0.1:$port/"
done

curl -fsSk -H "Host: $CACHED" "https://127.0.0.1:$NODE_PORT/" | grep -q "hello from the edge" \
  || { echo "the cached service did not answer" >&2; exit 1; }
node_h1="$(wrk_rps "$NODE_PORT" "$NAME")"
cached_h1="$(wrk_rps "$NODE_PORT" "$CACHED")"
nginx_h1="$(wrk_rps "$NGINX_PORT" "$NAME")"
node_h2="$(h2load_rps "$NODE_PORT" "$NAME")"
cached_h2="$(h2load_rps "$NODE_PORT" "$CACHED")"
nginx_h2="$(h2load_rps "$NGINX_PORT" "$NAME")"
node_hs="$(wrk_rps "$NODE_PORT" "$NAME" -H "Connection: close")"
nginx_hs="$(wrk_rps "$NGINX_PORT" "$NAME" -H "Connection: close")"
# The node's UDP port is its TLS port.
node_h3="$(target/release/examples/h3_load "127.0.0.1:$NODE_PORT" "$NAME" "$data/cert.pem" \
  "$CONNECTIONS" 10 "${DURATION%s}")"

printf '\n%s connections, %s threads, %s each, 127.0.0.1, %s cores, TLS 1.3, ECDSA P-256\n\n' \
  "$CONNECTIONS" "$THREADS" "$DURATION" "$(nproc)"
printf '%-36s %12s %12s %8s\n' "" "node req/s" "nginx req/s" "ratio"
printf '%-36s %12.0f %12.0f %8s\n' "HTTP/1.1 TLS, guest per request" "$node_h1" "$nginx_h1" "$(ratio "$node_h1" "$nginx_h1")"
printf '%-36s %12.0f %12.0f %8s\n' "HTTP/1.1 TLS, edge-cached response" "$cached_h1" "$nginx_h1" "$(ratio "$cached_h1" "$nginx_h1")"
printf '%-36s %12.0f %12.0f %8s\n' "HTTP/2 TLS, guest per request" "$node_h2" "$nginx_h2" "$(ratio "$node_h2" "$nginx_h2")"
printf '%-36s %12.0f %12.0f %8s\n' "HTTP/2 TLS, edge-cached response" "$cached_h2" "$nginx_h2" "$(ratio "$cached_h2" "$nginx_h2")"
printf '%-36s %12.0f %12.0f %8s\n' "full handshakes (Connection: close)" "$node_hs" "$nginx_hs" "$(ratio "$node_hs" "$nginx_hs")"
printf '%-36s %12.0f %12s %8s\n' "HTTP/3 (h3_load, 10 streams/conn)" "$node_h3" "-" "-"
echo
echo "targets: edge-cached HTTP/1.1 and HTTP/2 ratio >= 1.00; handshakes >= 0.80"

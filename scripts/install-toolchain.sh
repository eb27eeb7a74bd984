#!/usr/bin/env bash
# Installs what building and testing the project needs beyond a Rust
# toolchain: the wasm32-wasip2 target that the Rust example guests are built
# for, componentize-py (PyPI, into target/py-venv) for the Python one,
# componentize-js (npm, pinned by scripts/js-toolchain/package-lock.json,
# into target/js-toolchain) for the JavaScript one,
# aioquic (PyPI, same venv) as an independent HTTP/3 client, curl for
# HTTP/1.1 and HTTP/2 over TLS, PostgreSQL (Debian package) for the
# control plane's API suite, and Prometheus (Debian package) for the
# observability test, which scrapes a node and the control plane with the
# shipped scrape config.
# Idempotent: a second run only checks.
#
#   scripts/install-toolchain.sh          test prerequisites
#   scripts/install-toolchain.sh --bench  + wrk, h2load and nginx for the load
#                                           benchmarks (apt-get)
set -euo pipefail

want_bench=0
for arg in "$@"; do
  case "$arg" in
    --bench) want_bench=1 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[install-toolchain] %s\n' "$*" >&2; }

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  log "rustup target add wasm32-wasip2"
  rustup target add wasm32-wasip2
else
  log "wasm32-wasip2 target present"
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPONENTIZE_PY_VERSION="0.25.1"
venv="$root/target/py-venv"
if [ ! -x "$venv/bin/componentize-py" ] \
  || ! "$venv/bin/componentize-py" --version | grep -q "$COMPONENTIZE_PY_VERSION"; then
  log "pip install componentize-py==$COMPONENTIZE_PY_VERSION into target/py-venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
else
  log "componentize-py $COMPONENTIZE_PY_VERSION present"
fi

AIOQUIC_VERSION="1.3.0"
if ! "$venv/bin/python" -c "import aioquic, sys; sys.exit(aioquic.__version__ != '$AIOQUIC_VERSION')" 2>/dev/null; then
  log "pip install aioquic==$AIOQUIC_VERSION into target/py-venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "aioquic==$AIOQUIC_VERSION"
else
  log "aioquic $AIOQUIC_VERSION present"
fi

apt_updated=0
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  log "apt-get install $*"
  if [ "$apt_updated" = 0 ]; then
    $sudo apt-get update -q >/dev/null
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

js_toolchain="$root/target/js-toolchain"
COMPONENTIZE_JS_VERSION="$(sed -n 's/.*"@bytecodealliance\/componentize-js": "\(.*\)".*/\1/p' \
  "$root/scripts/js-toolchain/package.json")"
if ! cmp -s "$root/scripts/js-toolchain/package-lock.json" "$js_toolchain/package-lock.json" \
  || [ ! -x "$js_toolchain/node_modules/.bin/componentize-js" ]; then
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  node_major="$(node -p 'process.versions.node.split(".")[0]')"
  if [ "$node_major" -lt 20 ]; then
    log "componentize-js $COMPONENTIZE_JS_VERSION needs Node.js 20 or later; this is $(node --version)"
    exit 1
  fi
  log "npm ci componentize-js $COMPONENTIZE_JS_VERSION into target/js-toolchain"
  mkdir -p "$js_toolchain"
  cp "$root/scripts/js-toolchain/package.json" "$root/scripts/js-toolchain/package-lock.json" "$js_toolchain/"
  (cd "$js_toolchain" && npm ci --silent --no-audit --no-fund)
else
  log "componentize-js $COMPONENTIZE_JS_VERSION present"
fi

if ! command -v curl >/dev/null 2>&1; then
  apt_install curl ca-certificates
else
  log "curl present"
fi

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt_install postgresql
else
  log "PostgreSQL present"
fi

if ! command -v prometheus >/dev/null 2>&1; then
  apt_install prometheus
else
  log "Prometheus present"
fi

if [ "$want_bench" = 1 ] && ! command -v h2load >/dev/null 2>&1; then
  apt_install nghttp2-client
fi

if [ "$want_bench" = 1 ] && ! command -v nginx >/dev/null 2>&1; then
  apt_install nginx-light
fi

if [ "$want_bench" = 1 ] && ! command -v wrk >/dev/null 2>&1; then
  apt_install wrk
fi

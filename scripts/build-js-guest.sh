#!/usr/bin/env bash
# Builds examples/javascript into a wasi:http component with componentize-js
# (installed into target/js-toolchain by scripts/install-toolchain.sh):
#   target/guests/javascript.wasm
# Prints the component's path. Skips the build when the component is newer
# than the app, this script and the toolchain's lock file.
#
# componentize-js embeds a JavaScript engine built against one WASI 0.2.x
# release, and the world it is given must name that release: the world here
# is the platform's `service` world (sdk/wit, WASI 0.2.12, so the guest can
# import edge:platform/cache) rewritten to the engine's release. WASI 0.2
# releases only add items, each marked `@since(version = ...)`, so dropping
# the items added after the engine's release gives that release's WIT.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
app="$root/examples/javascript/app.js"
out="$root/target/guests/javascript.wasm"
toolchain="$root/target/js-toolchain/node_modules"
lock="$root/scripts/js-toolchain/package-lock.json"
if [ ! -x "$toolchain/.bin/componentize-js" ] || ! cmp -s "$lock" "$root/target/js-toolchain/package-lock.json"; then
  "$root/scripts/install-toolchain.sh" >&2
fi

if [ -f "$out" ] && [ "$out" -nt "$app" ] && [ "$out" -nt "$0" ] && [ "$out" -nt "$lock" ] \
  && [ -z "$(find "$root/sdk/wit" -newer "$out" -name '*.wit')" ]; then
  echo "$out"
  exit 0
fi

engine="$toolchain/@bytecodealliance/componentize-js/lib/starlingmonkey_embedding.wasm"
[ -f "$engine" ] || { echo "$engine is missing: run scripts/install-toolchain.sh" >&2; exit 1; }
engine_wasi="$(grep -ao 'wasi:http/incoming-handler@0\.2\.[0-9]*' "$engine" | head -n1 | sed 's/.*@//' || true)"
[ -n "$engine_wasi" ] || { echo "cannot tell which WASI release $engine is built for" >&2; exit 1; }
engine_patch="${engine_wasi##*.}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$root/sdk/wit" "$work/wit"
find "$work/wit" -name '*.wit' -print0 | while IFS= read -r -d '' wit; do
  awk -v release="$engine_wasi" -v patch="$engine_patch" '
    # An item added after the engine release: drop the gate and the item.
    match($0, /@since\(version = 0\.2\.[0-9]+\)/) {
      gate = substr($0, RSTART, RLENGTH); sub(/.*0\.2\./, "", gate); sub(/\).*/, "", gate)
      if (gate + 0 > patch + 0) { dropping = 1; next }
    }
    dropping {
      if ($0 !~ /;[[:space:]]*$/) { print FILENAME ": cannot drop a multi-line item" > "/dev/stderr"; exit 1 }
      dropping = 0; next
    }
    { gsub(/@0\.2\.12/, "@" release); print }' "$wit" > "$wit.new"
  mv "$wit.new" "$wit"
done

mkdir -p "$(dirname "$out")"
(cd "$work" && "$toolchain/.bin/componentize-js" --wit "$work/wit" --world-name service \
  -o "$work/javascript.wasm" "$app" >&2)
tmp="$(mktemp "$(dirname "$out")/.javascript.XXXXXX")"
cp "$work/javascript.wasm" "$tmp"
mv "$tmp" "$out"
echo "$out"

#!/bin/sh
# Builds the native addon (src/native/c -> build/Release/vmlink_native.node) with
# the node-gyp bundled with npm, against the installed Node headers (npmrc nodedir).
# `npm install` runs this too (package.json "install"); run it by hand after
# changing a .c file: sh scripts/build-native.sh
set -eu
cd "$(dirname "$0")/.."
gyp="$(npm prefix -g 2>/dev/null)/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"
if [ ! -f "$gyp" ]; then
  gyp="$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js"
fi
nodedir="${npm_config_nodedir:-$(node -p 'require("path").resolve(process.execPath, "../..")')}"
exec node "$gyp" rebuild --nodedir="$nodedir" "$@"

#!/usr/bin/env bash
# Prepares this machine for vmlink, idempotently: installs the Debian packages
# listed in scripts/debian-packages.txt that are missing, the npm packages
# (only when node_modules is missing or older than package-lock.json), makes
# sure /dev/net/tun exists, and builds the project. Run as root, or as a user
# with sudo. Prints what it did.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*"; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { say "not root and no sudo: run as root"; exit 1; }
  SUDO=(sudo)
fi

# 1. Debian packages (one per line; '#' starts a comment).
list=scripts/debian-packages.txt
missing=()
total=0
if [ -f "$list" ]; then
  while IFS= read -r line || [ -n "$line" ]; do
    pkg="${line%%#*}"
    pkg="${pkg//[[:space:]]/}"
    [ -n "$pkg" ] || continue
    total=$((total + 1))
    status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
    [ "$status" = installed ] || missing+=("$pkg")
  done <"$list"
fi
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${#missing[@]} missing Debian package(s): ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  say "all $total Debian packages in $list are installed"
fi

# 2. TUN device (TAP ports, namespaces in tests). No vhost: nothing here needs it.
if [ ! -c /dev/net/tun ]; then
  "${SUDO[@]}" modprobe tun 2>/dev/null || true
fi
if [ ! -c /dev/net/tun ]; then
  say "creating /dev/net/tun"
  "${SUDO[@]}" mkdir -p /dev/net
  "${SUDO[@]}" mknod -m 0666 /dev/net/tun c 10 200 || say "warning: could not create /dev/net/tun (TAP tests will fail)"
else
  say "/dev/net/tun present"
fi

# 3. npm packages.
if [ ! -d node_modules ] || { [ -f package-lock.json ] && [ package-lock.json -nt node_modules ]; }; then
  if [ -f package-lock.json ]; then
    say "installing npm packages (npm ci)"
    ci_log="$(mktemp)"
    if ! npm ci --no-audit --no-fund >"$ci_log" 2>&1; then
      # A lock file out of step with package.json (e.g. written by another npm) makes npm ci refuse;
      # install from package.json instead, without rewriting the lock file.
      say "npm ci refused: $(grep -E '^npm error .' "$ci_log" | grep -v '^npm error code' | head -n1)"
      say "falling back to npm install --no-save"
      npm install --no-audit --no-fund --no-save
    else
      tail -n 3 "$ci_log"
    fi
    rm -f "$ci_log"
  else
    say "installing npm packages (npm install: no package-lock.json)"
    npm install --no-audit --no-fund
  fi
  touch node_modules
else
  say "npm packages up to date"
fi

# 4. Build: the native addon (when missing or older than its sources), then the TypeScript.
addon=build/Release/vmlink_native.node
if [ ! -f "$addon" ] || [ -n "$(find src/native/c binding.gyp -newer "$addon" 2>/dev/null | head -n1)" ]; then
  say "building the native addon (scripts/build-native.sh)"
  sh scripts/build-native.sh >/dev/null
else
  say "native addon up to date"
fi
say "building (npm run build)"
npm run build --silent
say "done"

#!/usr/bin/env bash
# The vmlink demo: prepares the machine (scripts/setup.sh), starts a daemon with
# a demo network and two stream ports, boots two tiny VMs (QEMU, TCG) on those
# ports, shows them pinging each other, `vmlink status` and `vmlink port list`,
# then runs until Ctrl-C, which stops the VMs and the daemon.
#
#   ./scripts/up.sh          run until Ctrl-C
#   ./scripts/up.sh --once   exit after the pings (status 0 only if they succeeded)
#
# Environment (defaults in brackets), so a test can run it beside a real installation:
#   VMLINK_DEMO_CONTROL    control socket [/run/vmlink/vmlink.sock]
#   VMLINK_DEMO_STATE_DIR  state dir [/var/lib/vmlink/demo]
#   VMLINK_DEMO_RUN_DIR    port sockets, demo.yaml, demo-daemon.log [/run/vmlink]
#   VMLINK_DEMO_HTTP       the read-only HTTP endpoint: metrics, dashboard [tcp:127.0.0.1:9470]
#   VMLINK_DEMO_SKIP_SETUP=1  do not run scripts/setup.sh (already done)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

usage() {
  cat <<'EOF'
usage: ./scripts/up.sh [--once] [--help]

The vmlink demo, as root: installs what is needed (scripts/setup.sh), starts a
daemon with a network "demo" and two stream ports (vm1, vm2), boots two tiny
VMs (QEMU, TCG) on them and shows them pinging each other, then `vmlink status`
and `vmlink port list`. Runs until Ctrl-C, which stops the VMs and the daemon.

options:
  --once      exit after the pings (status 0 only if they succeeded)
  -h, --help  print this text

environment (default):
  VMLINK_DEMO_CONTROL       control socket (/run/vmlink/vmlink.sock)
  VMLINK_DEMO_STATE_DIR     state dir (/var/lib/vmlink/demo)
  VMLINK_DEMO_RUN_DIR       port sockets, demo.yaml, demo-daemon.log (/run/vmlink)
  VMLINK_DEMO_HTTP          the HTTP endpoint: metrics and the dashboard (tcp:127.0.0.1:9470)
  VMLINK_DEMO_SKIP_SETUP=1  do not run scripts/setup.sh (already done)

A guest of your own: `vmlink guest-image --out DIR --port PORT` writes a kernel
and an initramfs into DIR and prints the QEMU command that boots them on PORT.
EOF
}

# Printed before the script ends: how to go on from the demo.
next_steps() {
  cat <<EOF

up.sh: next, boot a guest of your own on a port of this daemon:
  node $root/bin/vmlink.js --control $control guest-image --out ./vmlink-guest --port vm1
  then run the qemu-system-x86_64 line it prints, with VMLINK_CONTROL=$control
  and vmlink on PATH (npm link); see docs/cli.md "vmlink guest-image".
EOF
}

once=0
for arg in "$@"; do
  case "$arg" in
    --once) once=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "up.sh: unknown argument \"$arg\" (use --once or --help)" >&2
      exit 2
      ;;
  esac
done

control="${VMLINK_DEMO_CONTROL:-/run/vmlink/vmlink.sock}"
state_dir="${VMLINK_DEMO_STATE_DIR:-/var/lib/vmlink/demo}"
run_dir="${VMLINK_DEMO_RUN_DIR:-/run/vmlink}"
http="${VMLINK_DEMO_HTTP:-tcp:127.0.0.1:9470}"
config="$run_dir/demo.yaml"
daemon_log="$run_dir/demo-daemon.log"
vmlink() { node "$root/bin/vmlink.js" --control "$control" "$@"; }

if [ "${VMLINK_DEMO_SKIP_SETUP:-0}" != 1 ]; then
  ./scripts/setup.sh
fi

if vmlink status >/dev/null 2>&1; then
  echo "up.sh: a vmlink daemon already answers on $control; stop it first, or set VMLINK_DEMO_CONTROL" >&2
  exit 1
fi

mkdir -p "$run_dir" "$state_dir" "$(dirname "$control")"
cat >"$config" <<YAML
# Written by scripts/up.sh
host:
  id: demo
  control: $control
  state_dir: $state_dir
networks:
  - { name: demo, vni: 100, mtu: 1500 }
ports:
  - { name: vm1, network: demo, kind: stream, listen: "unix:$run_dir/vm1.sock" }
  - { name: vm2, network: demo, kind: stream, listen: "unix:$run_dir/vm2.sock" }
http:
  listen: "$http"
YAML
echo "up.sh: config $config"

daemon_pid=
demo_pid=
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill -TERM "$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    echo "up.sh: stopping the daemon (pid $daemon_pid)"
    kill -TERM "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Its own session: Ctrl-C reaches this script and the VMs, and the daemon is stopped once, by cleanup.
setsid node "$root/bin/vmlink.js" daemon --config "$config" >"$daemon_log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 300); do
  if ! kill -0 "$daemon_pid" 2>/dev/null; then
    echo "up.sh: the daemon exited during start-up; its log ($daemon_log):" >&2
    cat "$daemon_log" >&2
    daemon_pid=
    exit 1
  fi
  if [ -S "$control" ] && vmlink status >/dev/null 2>&1; then break; fi
  sleep 0.1
done
vmlink status >/dev/null || { echo "up.sh: the daemon does not answer on $control; log: $daemon_log" >&2; exit 1; }
echo "up.sh: daemon running (pid $daemon_pid, control $control, log $daemon_log)"
# The HTTP endpoint does not keep the daemon from starting when its address is taken: say where it is, or why not.
http_at="$(vmlink status --json | node -e 'const s=JSON.parse(require("fs").readFileSync(0,"utf8")).http; process.stdout.write(s?.listen[0] ? "http://" + s.listen[0].slice(4) + "/" : "not listening: " + (s?.reason ?? "off"))')"
echo "up.sh: dashboard and metrics: $http_at (metrics at /metrics; docs/observe.md)"

if command -v qemu-system-x86_64 >/dev/null; then
  demo_args=(demo --control "$control" --vm vm1=10.0.0.1/24 --vm vm2=10.0.0.2/24)
  [ "$once" = 1 ] && demo_args+=(--once)
  node "$root/dist/test/helpers/vm-cli.js" "${demo_args[@]}" &
  demo_pid=$!
  rc=0
  wait "$demo_pid" || rc=$?
  demo_pid=
  next_steps
  exit "$rc"
fi

echo "up.sh: qemu-system-x86_64 not found: no VMs (scripts/setup.sh installs it)"
echo "\$ vmlink status"
vmlink status
echo "\$ vmlink port list"
vmlink port list
next_steps
if [ "$once" = 1 ]; then exit 0; fi
echo "up.sh: daemon running; Ctrl-C stops it"
wait "$daemon_pid" || true
daemon_pid=

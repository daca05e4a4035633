/**
 * The guest's `/init` and its DHCP hook (busybox ash), as text packed into
 * the initramfs by image.ts. Both are part of the image's cache key.
 */

/** Modules loaded with busybox insmod, in dependency order. */
export const VIRTIO_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_pci_legacy_dev',
  'virtio_pci_modern_dev',
  'virtio_pci',
  'virtio_blk',
  'failover',
  'net_failover',
  'virtio_net',
] as const;

/** Printed by /init when eth0 is configured and the shell is about to start. */
export const READY_LINE = 'vmlink-init: ready';

/** Printed by the DHCP hook when eth0 got a lease: `vmlink-init: eth0 192.0.2.100/24 from DHCP`. */
export const DHCP_LINE = 'from DHCP';

/** Where /init finds the hook busybox udhcpc runs on each lease event. */
export const DHCP_SCRIPT_PATH = '/usr/share/udhcpc/default.script';

/**
 * busybox udhcpc's hook: sets the leased address (`$ip`, `$mask` is the
 * prefix length), the default route and resolv.conf; on `deconfig` clears eth0.
 */
export const DHCP_SCRIPT = `#!/bin/busybox sh
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/\${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then ip route replace default via "\${router%% *}" dev "$interface"; fi
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    echo "vmlink-init: $interface $ip/\${mask:-24} ${DHCP_LINE}"
    ;;
esac
exit 0
`;

/**
 * The guest's /init. Kernel command line words it reads:
 * - `vmlink.ip=CIDR` a static address for eth0, or `vmlink.ip=dhcp` (busybox
 *   udhcpc; it goes to the background when no server answers within ~10 s);
 * - `vmlink.mac=MAC`, `vmlink.name=HOSTNAME`;
 * - `vmlink.interactive=1` a normal interactive shell for people; without it
 *   the shell reads the console as a script (the test harness).
 */
export const INIT_SCRIPT = `#!/bin/busybox sh
export PATH=/bin:/sbin
mkdir -p /proc /sys /dev /tmp /run /www /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1
dmesg -n 1
for m in ${VIRTIO_MODULES.join(' ')}; do
  insmod /lib/modules/$m.ko || echo "vmlink-init: insmod $m failed"
done
IP=
MAC=
INTERACTIVE=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vmlink.ip=*) IP="\${arg#vmlink.ip=}" ;;
    vmlink.mac=*) MAC="\${arg#vmlink.mac=}" ;;
    vmlink.name=*) hostname "\${arg#vmlink.name=}" ;;
    vmlink.interactive=1) INTERACTIVE=1 ;;
  esac
done
ip link set lo up
# virtio_net probes asynchronously: wait for eth0 (up to 10 s) when it is to be configured.
i=0
while [ -n "$IP$MAC" ] && [ ! -e /sys/class/net/eth0 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
if [ -e /sys/class/net/eth0 ]; then
  [ -n "$MAC" ] && ip link set eth0 address "$MAC"
  ip link set eth0 up
  if [ "$IP" = dhcp ]; then
    udhcpc -i eth0 -b -t 5 -T 2 -s ${DHCP_SCRIPT_PATH} || echo "vmlink-init: udhcpc failed"
  elif [ -n "$IP" ]; then
    ip addr add "$IP" dev eth0
  fi
elif [ -n "$IP$MAC" ]; then
  echo "vmlink-init: no eth0 (is a virtio-net-pci device attached?)"
fi
export HOME=/root
if [ -n "$INTERACTIVE" ]; then
  echo "${READY_LINE}"
  exec setsid cttyhack sh
fi
# The harness's shell reads the console as a script: no echo, no prompt, no
# line editing, and its reads retry after signals (an interactive busybox ash
# with echo off reads with fgets, which ends the shell on the EINTR of a
# SIGCHLD). PID 1 stays this script: it reaps orphans and restarts the shell
# when Ctrl-C (the console is its controlling tty) or a syntax error ends it.
stty -echo
echo "${READY_LINE}"
while :; do
  setsid cttyhack sh /dev/ttyS0
  echo "vmlink-init: shell exited with status $?; restarting it"
done
`;

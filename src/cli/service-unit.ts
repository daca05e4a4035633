/**
 * The systemd unit of the daemon, as text: the one source of
 * packaging/vmlink.service (a test checks that file is {@link renderUnit} with
 * the defaults) and of what `vmlink install-service` writes. Every option is
 * explained in docs/observe.md "Running under systemd"; the comments in the
 * unit say the reason where the choice is not obvious.
 */

/** Where the shipped unit expects the command and the config. */
export const DEFAULT_EXEC = '/usr/local/bin/vmlink';
export const DEFAULT_CONFIG = '/etc/vmlink/vmlink.yaml';

export interface UnitOptions {
  /** The program ExecStart runs, already quoted for a unit file (e.g. `/usr/bin/node /opt/vmlink/bin/vmlink.js`). */
  exec: string;
  /** Absolute path of the daemon's config file. */
  config: string;
  /** Extra directories the daemon writes (sockets, images) outside /run/vmlink and /var/lib/vmlink. */
  readWritePaths: readonly string[];
  /** `yes` hides /home, /root and /run/user; `read-only` when the program itself lives there. */
  protectHome: 'yes' | 'read-only';
}

/** A word for a unit file's command line: quoted when it holds a space, a quote or a backslash. */
export function unitWord(s: string): string {
  return /[\s"'\\]/.test(s) ? `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"` : s;
}

/** The unit file's text. */
export function renderUnit(o: UnitOptions): string {
  const rw = o.readWritePaths.map((p) => `ReadWritePaths=-${unitWord(p)}`);
  return `# vmlink: the virtual network and storage fabric daemon for QEMU/KVM VMs.
# Written by \`vmlink install-service\`; each option is explained in
# docs/observe.md "Running under systemd". Change it with \`systemctl edit vmlink\`
# (a drop-in survives the next install-service), not here.

[Unit]
Description=vmlink virtual network and storage fabric for VMs
After=network-online.target
Wants=network-online.target
# Five failed starts within a minute: stop trying (systemctl reset-failed vmlink).
StartLimitIntervalSec=60
StartLimitBurst=5

[Service]
# READY=1 comes once every configured port is open and the control socket serves.
Type=notify
NotifyAccess=main
ExecStart=${o.exec} daemon --config ${unitWord(o.config)}
# SIGHUP: the daemon re-reads the config and converges to it; a bad file is
# refused and logged, the running state is kept (RELOADING=1 ... READY=1).
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2s
# Exit status 2 is an invalid config: restarting does not fix it.
RestartPreventExitStatus=2
TimeoutStopSec=30s
# WATCHDOG=1 comes from the event loop every 15 s: a loop stuck for 30 s is restarted.
WatchdogSec=30s
# Ports, their connections, links and NBD clients each hold descriptors.
LimitNOFILE=65536
# /run/vmlink: the control socket and the ports' sockets; kept across a restart
# so what QEMU or an operator put there stays.
RuntimeDirectory=vmlink
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=restart
# /var/lib/vmlink: the state store and, by default, export images.
StateDirectory=vmlink
StateDirectoryMode=0700
UMask=0077
SyslogIdentifier=vmlink

# Runs as root with only these capabilities:
#   CAP_NET_ADMIN  TAP ports (TUNSETIFF, TUNSETOFFLOAD, MTU and link state),
#                  socket buffers above the sysctl caps (SO_SNDBUFFORCE/SO_RCVBUFFORCE)
#   CAP_NET_RAW    host ports (AF_PACKET sockets on a host interface)
#   CAP_CHOWN      socket.owner / socket.group of the sockets it creates, so
#                  QEMU running as another user (libvirt-qemu, kvm) may connect
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_CHOWN
NoNewPrivileges=yes
ProtectSystem=strict
${rw.length ? `${rw.join('\n')}\n` : ''}ProtectHome=${o.protectHome}
# Sockets for QEMU belong in /run/vmlink: this /tmp is the daemon's own.
PrivateTmp=yes
DevicePolicy=closed
DeviceAllow=/dev/net/tun rw
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# No MemoryDenyWriteExecute: V8's JIT needs memory that is written, then run.

[Install]
WantedBy=multi-user.target
`;
}

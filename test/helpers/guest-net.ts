/**
 * Network checks run inside guests: ping, and a checksummed bulk transfer
 * over TCP (busybox httpd + wget; busybox nc is unreliable at end of stream).
 */
import type { RunResult, Vm } from './vm.js';

/** The address part of a `10.0.0.1/24` style IP. */
export function addr(vm: Vm): string {
  if (!vm.ip) throw new Error(`VM ${vm.name} has no IP`);
  return vm.ip.split('/')[0] as string;
}

/**
 * Pings `to` from `from`: `count` echo requests, each waiting up to
 * `waitSec` for its reply. Exit code 0 means at least one reply came back.
 */
export function ping(from: Vm, to: Vm, opts: { count?: number; waitSec?: number } = {}): Promise<RunResult> {
  const count = opts.count ?? 3;
  const wait = opts.waitSec ?? 2;
  return from.run(`ping -c ${count} -W ${wait} ${addr(to)}`, { timeoutMs: (count * (wait + 1) + 30) * 1000 });
}

/**
 * Pings until one reply arrives or `tries` rounds fail (the first packets may
 * be lost to ARP resolution or to a port still coming up). Returns the last result.
 */
export async function pingUntilReply(from: Vm, to: Vm, tries = 10): Promise<RunResult> {
  let r: RunResult = { output: '', code: -1 };
  for (let i = 0; i < tries; i++) {
    r = await from.run(`ping -c 1 -W 2 ${addr(to)}`, { timeoutMs: 30_000 });
    if (r.code === 0) return r;
  }
  return r;
}

export interface TransferResult {
  /** sha256 of the file on the serving VM. */
  sent: string;
  /** sha256 of what the fetching VM received. */
  received: string;
  /** Bytes the fetching VM received. */
  bytes: number;
}

/**
 * Generates `mb` MiB from /dev/urandom on `server`, serves it with busybox
 * httpd, fetches it with wget on `client`, and returns both checksums.
 */
export async function transfer(server: Vm, client: Vm, mb = 10): Promise<TransferResult> {
  await server.sh(`mkdir -p /www && dd if=/dev/urandom of=/www/blob bs=1048576 count=${mb} 2>/dev/null`, {
    timeoutMs: 120_000,
  });
  const sent = (await server.sh('sha256sum /www/blob', { timeoutMs: 60_000 })).trim().split(/\s+/)[0] as string;
  await server.sh('killall httpd 2>/dev/null; httpd -p 80 -h /www');
  try {
    // Not wget -T: busybox-static 1.35's wget segfaults with it; timeout(1) bounds the fetch instead.
    await client.sh(`rm -f /tmp/blob; timeout 240 wget -q -O /tmp/blob http://${addr(server)}/blob`, {
      timeoutMs: 300_000,
    });
    const received = (await client.sh('sha256sum /tmp/blob', { timeoutMs: 60_000 })).trim().split(/\s+/)[0] as string;
    const bytes = Number((await client.sh('wc -c < /tmp/blob')).trim());
    await client.sh('rm -f /tmp/blob');
    return { sent, received, bytes };
  } finally {
    await server.run('killall httpd; rm -f /www/blob');
  }
}

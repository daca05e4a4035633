/**
 * The vhost-user lab shared by the vhost-user port tests: a daemon with one
 * network and three vhost-user ports (va, vb, vc) and a stream port (st),
 * the test frames they exchange, and a poll for a condition.
 */
import { startDaemon, type TestDaemon } from './daemon.js';

export const MAC_A = '020000000a01';
export const MAC_B = '020000000b02';

/** An Ethernet frame dst <- src with a recognisable payload of `len` bytes in total. */
export function frame(dst: string, src: string, fill: number, len = 60): Buffer {
  const f = Buffer.alloc(len, fill);
  Buffer.from(dst, 'hex').copy(f, 0);
  Buffer.from(src, 'hex').copy(f, 6);
  f.writeUInt16BE(0x88b5, 12); // local experimental ethertype
  return f;
}

/** Starts a daemon with network `lab` (VNI 10), vhost-user ports va, vb, vc and stream port st, each on `<name>.sock`. */
export function startVhostLab(): Promise<TestDaemon> {
  return startDaemon({
    networks: [{ name: 'lab', vni: 10 }],
    ports: (dir) => [
      { name: 'va', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/va.sock` },
      { name: 'vb', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/vb.sock` },
      { name: 'vc', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/vc.sock` },
      { name: 'st', network: 'lab', kind: 'stream', listen: `unix:${dir}/st.sock` },
    ],
  });
}

/** Resolves once `cond()` holds; rejects after `timeoutMs` (default 5000). */
export async function waitFor(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

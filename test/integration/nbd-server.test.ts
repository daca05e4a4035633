/**
 * Server behaviour over real sockets with our client and raw bytes: error
 * replies per spec, malformed requests, out-of-order replies, the per-client
 * in-flight bound (backpressure, nothing dropped), DISC and graceful close.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import type { BlockBackend } from '../../src/storage/backend.js';
import { MemoryBackend } from '../../src/storage/backends/memory.js';
import { NbdClientError } from '../../src/storage/errors.js';
import { NbdClient } from '../../src/storage/nbd/client.js';
import { NBD_ERR } from '../../src/storage/nbd/constants.js';
import { type RunningServer, startServer } from '../helpers/nbd-peer.js';

const SIZE = 1 << 20;

/** A memory backend whose writes and reads wait at a gate the test opens one request at a time. */
class GatedBackend extends MemoryBackend {
  /** Reads go to read() (not answered from extents as holes), so they reach the gate. */
  override readonly cheapExtents = false;
  waiting: (() => void)[] = [];
  most = 0;
  #arrived: (() => void) | undefined;
  #want = 0;
  gateReads = false;

  /** Resolves once `n` requests wait at the gate. */
  arrivals(n: number): Promise<void> {
    if (this.waiting.length >= n) return Promise.resolve();
    this.#want = n;
    return new Promise((r) => (this.#arrived = r));
  }

  release(): void {
    this.waiting.shift()?.();
  }

  async #gate(): Promise<void> {
    await new Promise<void>((r) => {
      this.waiting.push(r);
      this.most = Math.max(this.most, this.waiting.length);
      if (this.#arrived && this.waiting.length >= this.#want) {
        const f = this.#arrived;
        this.#arrived = undefined;
        f();
      }
    });
  }

  override async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    await this.#gate();
    return super.write(offset, data, fua);
  }

  override async read(offset: number, length: number): Promise<Buffer> {
    if (this.gateReads && offset === 0) await this.#gate();
    return super.read(offset, length);
  }
}

const errno = (n: number) => (err: unknown) => {
  assert.ok(err instanceof NbdClientError, String(err));
  assert.equal(err.errno, n, err.message);
  return true;
};

/** Raw connection through NBD_OPT_EXPORT_NAME (no zeroes); resolves once in transmission. */
async function rawConnect(
  socketPath: string,
  name: string,
): Promise<{ s: Socket; read: (n: number) => Promise<Buffer> }> {
  const s = connect(socketPath);
  let buf = Buffer.alloc(0);
  let wake: (() => void) | undefined;
  s.on('data', (b: Buffer) => {
    buf = Buffer.concat([buf, b]);
    wake?.();
  });
  s.on('close', () => wake?.());
  const read = async (n: number): Promise<Buffer> => {
    while (buf.length < n) {
      if (s.destroyed) throw new Error('closed');
      await new Promise<void>((r) => (wake = r));
    }
    const out = buf.subarray(0, n);
    buf = buf.subarray(n);
    return out;
  };
  await once(s, 'connect');
  const nb = Buffer.from(name);
  const h = Buffer.alloc(20);
  h.writeUInt32BE(3, 0);
  h.write('IHAVEOPT', 4, 'latin1');
  h.writeUInt32BE(1, 12);
  h.writeUInt32BE(nb.length, 16);
  s.write(Buffer.concat([h, nb]));
  await read(18 + 10);
  return { s, read };
}

function request(type: number, flags: number, cookie: number, offset: number, length: number, magic = 0x25609513) {
  const b = Buffer.alloc(28);
  b.writeUInt32BE(magic, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(BigInt(cookie), 8);
  b.writeBigUInt64BE(BigInt(offset), 16);
  b.writeUInt32BE(length, 24);
  return b;
}

describe('NBD server over sockets', { timeout: 120_000 }, () => {
  let dir = '';
  let srv: RunningServer;
  let gated: GatedBackend;
  const clients: NbdClient[] = [];
  /** Servers a test starts for itself; destroyed here too, so a failed assertion cannot leave one listening. */
  const extra: RunningServer[] = [];
  const client = async (name: string, opts: { structured?: boolean; meta?: boolean } = {}) => {
    const c = await NbdClient.connect({
      address: srv.address,
      export: name,
      structuredReplies: opts.structured ?? true,
      baseAllocation: opts.meta ?? true,
    });
    clients.push(c);
    return c;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-nbd-server-'));
    gated = new GatedBackend({ size: SIZE });
    srv = await startServer(
      dir,
      's',
      [
        { name: 'mem', backend: new MemoryBackend({ size: SIZE }) },
        { name: 'ro', backend: new MemoryBackend({ size: SIZE }), readOnly: true },
        { name: 'gated', backend: gated as BlockBackend },
      ],
      { maxInFlightPerClient: 4 },
    );
  });
  after(async () => {
    for (const c of clients) c.destroy();
    await Promise.all(extra.map((x) => x.server.destroy()));
    await srv.server.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  it('answers errors per spec: EPERM read-only, EINVAL reads beyond the end, ENOSPC writes beyond the end', async () => {
    const ro = await client('ro');
    await assert.rejects(ro.write(0, Buffer.alloc(512)), errno(NBD_ERR.EPERM));
    await assert.rejects(ro.trim(0, 512), errno(NBD_ERR.EPERM));
    assert.equal((await ro.read(0, 512)).length, 512, 'reads still work after errors');
    const c = await client('mem');
    await assert.rejects(c.read(SIZE - 1, 2), errno(NBD_ERR.EINVAL));
    await assert.rejects(c.write(SIZE - 1, Buffer.alloc(2)), errno(NBD_ERR.ENOSPC));
    await assert.rejects(c.writeZeroes(SIZE, 1), errno(NBD_ERR.ENOSPC));
    await assert.rejects(c.trim(SIZE, 1), errno(NBD_ERR.EINVAL));
    await assert.rejects(c.blockStatus(SIZE, 1), errno(NBD_ERR.EINVAL));
    await assert.rejects(c.read(0, 64 << 20), errno(NBD_ERR.EINVAL));
  });

  it('refuses BLOCK_STATUS with EINVAL when base:allocation was not negotiated', async () => {
    const c = await client('mem', { meta: false });
    await assert.rejects(c.blockStatus(0, 4096), errno(NBD_ERR.EINVAL));
    const simple = await client('mem', { structured: false });
    await simple.write(0, Buffer.from('simple'));
    assert.equal((await simple.read(0, 6)).toString(), 'simple');
  });

  it('answers an unknown command and an unknown flag with EINVAL and keeps the connection', async () => {
    const { s, read } = await rawConnect(srv.socket, 'mem');
    s.write(request(99, 0, 1, 0, 0));
    s.write(request(0, 0x80, 2, 0, 16));
    s.write(request(0, 0, 3, 0, 4));
    assert.equal((await read(16)).toString('hex'), '67446698' + '00000016' + '0000000000000001');
    assert.equal((await read(16)).toString('hex'), '67446698' + '00000016' + '0000000000000002');
    assert.equal((await read(16)).toString('hex'), '67446698' + '00000000' + '0000000000000003');
    assert.equal((await read(4)).length, 4);
    s.destroy();
  });

  it('closes a connection that sends a bad magic, and keeps serving others', async () => {
    const before = srv.server.stats.protocolErrors;
    const { s } = await rawConnect(srv.socket, 'mem');
    s.write(request(0, 0, 1, 0, 4, 0xdeadbeef));
    await once(s, 'close');
    assert.equal(srv.server.stats.protocolErrors, before + 1);
    const c = await client('mem');
    await c.write(0, Buffer.from('alive'));
    assert.equal((await c.read(0, 5)).toString(), 'alive');
  });

  it('logs exactly one line naming the bad value when it drops a connection for a bad magic', async () => {
    const lines: { level: number; msg: string }[] = [];
    const logger = pino({ level: 'debug' }, { write: (l: string) => lines.push(JSON.parse(l)) });
    const s6 = await startServer(dir, 'logged', [{ name: 'm', backend: new MemoryBackend({ size: SIZE }) }], {
      logger,
    });
    extra.push(s6);
    const { s } = await rawConnect(s6.socket, 'm');
    s.write(request(0, 0, 1, 0, 4, 0xdeadbeef));
    await once(s, 'close');
    const warnings = lines.filter((l) => l.level >= 40);
    assert.equal(warnings.length, 1, JSON.stringify(lines));
    assert.match(warnings[0]?.msg ?? '', /closing NBD connection: bad request magic 0xdeadbeef/);
  });

  it('closes a connection that announces a write payload beyond 32 MiB, saying why', async () => {
    const lines: { level: number; msg: string }[] = [];
    const logger = pino({ level: 'debug' }, { write: (l: string) => lines.push(JSON.parse(l)) });
    const s7 = await startServer(dir, 'payload', [{ name: 'm', backend: new MemoryBackend({ size: SIZE }) }], {
      logger,
    });
    extra.push(s7);
    const { s } = await rawConnect(s7.socket, 'm');
    s.write(request(1, 0, 1, 0, 0xffffffff));
    await once(s, 'close');
    assert.equal(s7.server.stats.protocolErrors, 1);
    const warnings = lines.filter((l) => l.level >= 40).map((l) => l.msg);
    assert.deepEqual(warnings, [
      'closing NBD connection: write payload of 4294967295 bytes exceeds the 33554432-byte maximum',
    ]);
  });

  it('answers requests out of order as they complete', async () => {
    gated.gateReads = true;
    try {
      const c = await client('gated');
      const order: string[] = [];
      const slow = c.read(0, 4096).then(() => order.push('slow'));
      await gated.arrivals(1);
      await c.read(8192, 4096).then(() => order.push('fast'));
      assert.deepEqual(order, ['fast']);
      gated.release();
      await slow;
      assert.deepEqual(order, ['fast', 'slow']);
    } finally {
      gated.gateReads = false;
    }
  });

  it('never has more than maxInFlightPerClient requests of one client in the backend, and answers them all', async () => {
    gated.most = 0;
    const c = await client('gated');
    const writes = Array.from({ length: 40 }, (_, i) => c.write(i * 4096, Buffer.alloc(4096, i + 1)));
    for (let i = 0; i < 40; i++) {
      await gated.arrivals(Math.min(4, 40 - i));
      gated.release();
    }
    await Promise.all(writes);
    assert.equal(gated.most, 4);
    const back = await c.read(0, 40 * 4096);
    for (let i = 0; i < 40; i++) assert.equal(back[i * 4096], i + 1);
  });

  it('also bounds the payload bytes a client has in flight', async () => {
    const g = new GatedBackend({ size: SIZE });
    const s2 = await startServer(dir, 'bytes', [{ name: 'g', backend: g as BlockBackend }], {
      maxInFlightPerClient: 64,
      maxInFlightBytesPerClient: 64 * 1024,
    });
    extra.push(s2);
    const c = await NbdClient.connect({ address: s2.address, export: 'g' });
    const writes = Array.from({ length: 20 }, (_, i) => c.write(i * 16384, Buffer.alloc(16384, i + 1)));
    for (let i = 0; i < 20; i++) {
      await g.arrivals(Math.min(4, 20 - i));
      g.release();
    }
    await Promise.all(writes);
    assert.equal(g.most, 4, '64 KiB of 16 KiB writes');
    c.destroy();
    await s2.server.destroy();
  });

  it('shares backend service between exports by weight when clients of both keep it busy', async () => {
    // Writes (tiny replies, so no client is slowed by its own socket) into a backend that takes
    // one event-loop turn per request: the backend is the bottleneck and both exports stay backlogged.
    const log: string[] = [];
    class Recording extends MemoryBackend {
      constructor(readonly tag: string) {
        super({ size: SIZE });
      }
      override async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
        log.push(this.tag);
        await new Promise<void>((r) => setImmediate(r));
        return super.write(offset, data, fua);
      }
    }
    const s3 = await startServer(
      dir,
      'fair',
      [
        { name: 'light', backend: new Recording('light') as BlockBackend, weight: 1 },
        { name: 'heavy', backend: new Recording('heavy') as BlockBackend, weight: 3 },
      ],
      { concurrency: 1, maxInFlightPerClient: 32 },
    );
    extra.push(s3);
    const a = await NbdClient.connect({ address: s3.address, export: 'light' });
    const b = await NbdClient.connect({ address: s3.address, export: 'heavy' });
    try {
      const data = Buffer.alloc(65536, 1);
      const writes: Promise<void>[] = [];
      for (let i = 0; i < 200; i++) writes.push(a.write(0, data), b.write(0, data));
      await Promise.all(writes);
      // While both are backlogged (heavy runs out after ~267 dispatches), heavy gets three of every four.
      const first = log.slice(0, 200);
      const heavyShare = first.filter((t) => t === 'heavy').length / first.length;
      assert.ok(Math.abs(heavyShare - 0.75) < 0.05, `heavy share ${heavyShare}`);
    } finally {
      a.destroy();
      b.destroy();
      await s3.server.destroy();
    }
  });

  it('closes a client that does not finish the handshake in time', async () => {
    const s4 = await startServer(dir, 'slow', [{ name: 'm', backend: new MemoryBackend({ size: SIZE }) }], {
      handshakeTimeoutMs: 50,
    });
    extra.push(s4);
    const idle = connect(s4.socket);
    idle.on('data', () => {});
    await once(idle, 'close');
    assert.equal(s4.server.admission().refused.handshake_timeout, 1);
    assert.equal(s4.server.stats.protocolErrors, 0);
  });

  it('refuses unix connections beyond maxUnixConnections and keeps serving the ones it has', async () => {
    const s5 = await startServer(dir, 'limit', [{ name: 'm', backend: new MemoryBackend({ size: SIZE }) }], {
      maxUnixConnections: 1,
    });
    extra.push(s5);
    const c = await NbdClient.connect({ address: s5.address, export: 'm' });
    const over = connect(s5.socket);
    over.on('error', () => {});
    await once(over, 'close');
    await c.write(0, Buffer.from('ok'));
    assert.equal((await c.read(0, 2)).toString(), 'ok');
    assert.equal(s5.server.admission().refused.listener_full, 1);
    c.destroy();
  });

  it('answers in-flight requests before closing on NBD_CMD_DISC, as a clean end rather than a protocol error', async () => {
    const errorsBefore = srv.server.stats.protocolErrors;
    const { s, read } = await rawConnect(srv.socket, 'mem');
    const w = request(1, 0, 7, 4096, 4);
    s.write(Buffer.concat([w, Buffer.from('disc'), request(2, 0, 8, 0, 0)]));
    assert.equal((await read(16)).toString('hex'), '67446698' + '00000000' + '0000000000000007');
    await once(s, 'close');
    assert.equal(srv.server.stats.protocolErrors, errorsBefore);
    const c = await client('mem');
    assert.equal((await c.read(4096, 4)).toString(), 'disc');
  });

  it('close() answers in-flight requests, then closes connections and listeners', async () => {
    const g = new GatedBackend({ size: SIZE });
    const s2 = await startServer(dir, 'closing', [{ name: 'g', backend: g as BlockBackend }]);
    extra.push(s2);
    const c = await NbdClient.connect({ address: s2.address, export: 'g' });
    const w = c.write(0, Buffer.from('kept'));
    await g.arrivals(1);
    const closing = s2.server.close();
    g.release();
    await w;
    await closing;
    assert.equal(s2.server.connections, 0);
    await assert.rejects(NbdClient.connect({ address: s2.address, export: 'g' }), /cannot connect/);
    assert.equal((await g.read(0, 4)).toString(), 'kept');
    c.destroy();
  });
});

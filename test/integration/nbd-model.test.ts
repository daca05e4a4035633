/**
 * Randomized model test: thousands of random reads, writes, trims, zeroes,
 * flushes and block-status queries through a real NBD connection, several in
 * flight at once, compared byte for byte with an in-memory model (seeded,
 * bounded). Then seeded fuzzing of handshakes and requests: the server must
 * stay up and keep serving.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CowBackend } from '../../src/storage/backends/cow.js';
import { FileBackend } from '../../src/storage/backends/file.js';
import { MemoryBackend } from '../../src/storage/backends/memory.js';
import { NbdClientError } from '../../src/storage/errors.js';
import { NbdClient } from '../../src/storage/nbd/client.js';
import { CMD_FLAG, NBD_ERR, STATE_ZERO } from '../../src/storage/nbd/constants.js';
import { pattern } from '../helpers/nbd-compliance.js';
import { type RunningServer, startServer } from '../helpers/nbd-peer.js';

const SIZE = 8 * 1024 * 1024;
const SEED = Number(process.env['NBD_MODEL_SEED'] ?? 0x5eed);

/** xorshift32: small, seeded, good enough for test inputs. */
function prng(seed: number) {
  let x = seed >>> 0 || 1;
  const next = (): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
  return { next, int: (n: number) => Math.floor(next() * n) };
}

/** Bytes the export must hold; `known[i]` is 0 after a trim (content unspecified until rewritten). */
class Model {
  data = Buffer.alloc(SIZE);
  known = new Uint8Array(SIZE).fill(1);

  check(offset: number, got: Buffer, what: string): void {
    for (let i = 0; i < got.length; i++) {
      const j = offset + i;
      if (this.known[j] && this.data[j] !== got[i])
        assert.fail(`${what}: byte ${j} is ${got[i]}, model says ${this.data[j]} (seed ${SEED})`);
    }
  }
}

interface Op {
  kind: 'read' | 'write' | 'trim' | 'zero' | 'fastzero' | 'flush' | 'status' | 'cache';
  offset: number;
  length: number;
  seed: number;
  flags: number;
}

function randomOp(r: ReturnType<typeof prng>): Op {
  const kinds: Op['kind'][] = [
    'read',
    'read',
    'read',
    'write',
    'write',
    'write',
    'trim',
    'zero',
    'fastzero',
    'flush',
    'status',
    'cache',
  ];
  const kind = kinds[r.int(kinds.length)] as Op['kind'];
  // Mostly small and unaligned, sometimes large and block-aligned.
  const big = r.next() < 0.2;
  const length = big ? (1 + r.int(16)) * 65536 : 1 + r.int(20000);
  const offset = big ? r.int(SIZE / 65536) * 65536 : r.int(SIZE);
  const clipped = Math.min(length, SIZE - offset);
  return { kind, offset, length: clipped, seed: r.int(0xffffffff) + 1, flags: r.next() < 0.3 ? CMD_FLAG.FUA : 0 };
}

async function runModel(c: NbdClient, rounds: number, seed: number): Promise<number> {
  const r = prng(seed);
  const m = new Model();
  let ops = 0;
  for (let round = 0; round < rounds; round++) {
    // A batch of up to 8 requests on disjoint ranges, all in flight together.
    const batch: Op[] = [];
    const want = 1 + r.int(8);
    for (let tries = 0; batch.length < want && tries < 32; tries++) {
      const op = randomOp(r);
      if (batch.some((b) => op.offset < b.offset + b.length && b.offset < op.offset + op.length)) continue;
      batch.push(op);
    }
    await Promise.all(batch.map((op) => apply(c, m, op)));
    ops += batch.length;
  }
  const all = await c.read(0, SIZE);
  m.check(0, all, 'final read');
  return ops;
}

async function apply(c: NbdClient, m: Model, op: Op): Promise<void> {
  const { offset, length } = op;
  switch (op.kind) {
    case 'read':
      m.check(offset, await c.read(offset, length), `read ${length}@${offset}`);
      return;
    case 'write': {
      const d = pattern(length, op.seed);
      await c.write(offset, d, op.flags);
      d.copy(m.data, offset);
      m.known.fill(1, offset, offset + length);
      return;
    }
    case 'trim':
      await c.trim(offset, length, op.flags);
      m.known.fill(0, offset, offset + length);
      return;
    case 'zero':
      await c.writeZeroes(offset, length, op.flags | (op.seed & 1 ? CMD_FLAG.NO_HOLE : 0));
      m.data.fill(0, offset, offset + length);
      m.known.fill(1, offset, offset + length);
      return;
    case 'fastzero':
      try {
        await c.writeZeroes(offset, length, CMD_FLAG.FAST_ZERO);
        m.data.fill(0, offset, offset + length);
        m.known.fill(1, offset, offset + length);
      } catch (err) {
        // ENOTSUP must leave the contents alone (proto.md NBD_CMD_FLAG_FAST_ZERO).
        assert.ok(err instanceof NbdClientError && err.errno === NBD_ERR.ENOTSUP, String(err));
      }
      return;
    case 'flush':
      await c.flush();
      return;
    case 'cache':
      await c.cache(offset, length);
      return;
    case 'status': {
      if (c.metaContextId === undefined) return;
      const ext = await c.blockStatus(offset, length);
      assert.ok(ext.length > 0);
      let pos = offset;
      for (const e of ext) {
        if (pos >= offset + length) break;
        const n = Math.min(e.length, offset + length - pos);
        if (e.flags & STATE_ZERO) m.check(pos, Buffer.alloc(n), `zero extent ${n}@${pos}`);
        pos += n;
      }
    }
  }
}

describe('NBD randomized model and fuzzing', { timeout: 180_000 }, () => {
  let dir = '';
  let srv: RunningServer;
  const clients: NbdClient[] = [];
  const client = async (name: string, structured = true) => {
    const c = await NbdClient.connect({ address: srv.address, export: name, structuredReplies: structured });
    clients.push(c);
    return c;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-nbd-model-'));
    srv = await startServer(dir, 'm', [
      { name: 'mem', backend: new MemoryBackend({ size: SIZE }) },
      { name: 'simple', backend: new MemoryBackend({ size: SIZE }) },
      { name: 'file', backend: await FileBackend.open({ path: join(dir, 'm.img'), size: SIZE }) },
      {
        name: 'cow',
        backend: await CowBackend.create({
          base: new MemoryBackend({ size: SIZE, readOnly: true }),
          overlay: new MemoryBackend({ size: SIZE }),
          blockSize: 4096,
        }),
      },
    ]);
  });
  after(async () => {
    for (const c of clients) c.destroy();
    await srv.close();
    await rm(dir, { recursive: true, force: true });
  });

  for (const name of ['mem', 'file', 'cow']) {
    it(`keeps the ${name} export equal to the model over thousands of random requests`, async () => {
      const ops = await runModel(await client(name), 500, SEED);
      assert.ok(ops >= 1500, `ran ${ops} requests`);
    });
  }

  it('keeps the model with simple replies (no structured replies negotiated)', async () => {
    await runModel(await client('simple', false), 150, SEED + 1);
  });

  it('survives seeded fuzzed handshakes and requests and keeps serving', async () => {
    const r = prng(SEED + 2);
    const valid = validStream();
    for (let i = 0; i < 300; i++) {
      const input = Buffer.from(valid);
      const cut = r.next() < 0.3 ? r.int(input.length) : input.length;
      const mutated = input.subarray(0, cut);
      for (let k = 1 + r.int(6); k > 0; k--) if (mutated.length) mutated[r.int(mutated.length)] = r.int(256);
      const s = connect(srv.socket);
      s.on('error', () => {});
      s.on('data', () => {});
      await once(s, 'connect');
      s.end(mutated);
      // The server must close every connection once the client's input ends, whatever it held.
      await once(s, 'close');
    }
    const c = await client('mem');
    await c.write(0, Buffer.from('still here'));
    assert.equal((await c.read(0, 10)).toString(), 'still here');
  });
});

/** A valid client stream: flags, STRUCTURED_REPLY, SET_META_CONTEXT, GO "mem", then a write, read, block status. */
function validStream(): Buffer {
  const opt = (o: number, d: Buffer) => {
    const h = Buffer.alloc(16);
    h.write('IHAVEOPT', 0, 'latin1');
    h.writeUInt32BE(o, 8);
    h.writeUInt32BE(d.length, 12);
    return Buffer.concat([h, d]);
  };
  const name = Buffer.from('mem');
  const q = Buffer.from('base:allocation');
  const meta = Buffer.alloc(4 + 3 + 4 + 4 + q.length);
  meta.writeUInt32BE(3, 0);
  name.copy(meta, 4);
  meta.writeUInt32BE(1, 7);
  meta.writeUInt32BE(q.length, 11);
  q.copy(meta, 15);
  const go = Buffer.alloc(4 + 3 + 2);
  go.writeUInt32BE(3, 0);
  name.copy(go, 4);
  const req = (type: number, off: number, len: number) => {
    const b = Buffer.alloc(28);
    b.writeUInt32BE(0x25609513, 0);
    b.writeUInt16BE(type, 6);
    b.writeBigUInt64BE(BigInt(type + 1), 8);
    b.writeBigUInt64BE(BigInt(off), 16);
    b.writeUInt32BE(len, 24);
    return b;
  };
  return Buffer.concat([
    Buffer.from([0, 0, 0, 3]),
    opt(8, Buffer.alloc(0)),
    opt(10, meta),
    opt(7, go),
    req(1, 65536, 16),
    Buffer.alloc(16, 0x42),
    req(0, 65536, 16),
    req(7, 0, 1 << 20),
    req(6, 4096, 4096),
    req(3, 0, 0),
  ]);
}

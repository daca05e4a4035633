import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryBackend } from '../../src/storage/backends/memory.js';
import { ExportRegistry } from '../../src/storage/exports.js';
import { ServerHandshake } from '../../src/storage/nbd/handshake.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const out = (h: ServerHandshake): string => {
  const s = Buffer.concat(h.out).toString('hex');
  h.out = [];
  return s;
};

function registry(): ExportRegistry {
  const r = new ExportRegistry();
  r.add({ name: 'disk', backend: new MemoryBackend({ size: 1 << 20 }), description: 'Disk' });
  r.add({ name: 'ro', backend: new MemoryBackend({ size: 4096 }), readOnly: true });
  return r;
}

/** `IHAVEOPT`, option, length, data. */
const opt = (o: number, data = ''): Buffer => {
  const d = hex(data);
  const h = Buffer.alloc(16);
  h.write('IHAVEOPT', 0, 'latin1');
  h.writeUInt32BE(o, 8);
  h.writeUInt32BE(d.length, 12);
  return Buffer.concat([h, d]);
};
/** Option reply header as hex: magic, option, type, length. */
const rep = (o: number, type: number, len: number): string =>
  `0003e889045565a9${o.toString(16).padStart(8, '0')}${type.toString(16).padStart(8, '0')}${len.toString(16).padStart(8, '0')}`;

const FIXED_NOZEROES = hex('00000003');
const GO_DISK = '00000004' + Buffer.from('disk').toString('hex') + '0000';

describe('NBD server handshake', () => {
  it('greets with NBDMAGIC, IHAVEOPT and the FIXED_NEWSTYLE|NO_ZEROES flags', () => {
    const h = new ServerHandshake(registry());
    assert.equal(out(h), '4e42444d41474943' + '49484156454f5054' + '0003');
  });

  it('answers NBD_OPT_EXPORT_NAME with size and flags and no zero padding when NO_ZEROES was agreed', () => {
    const h = new ServerHandshake(registry());
    out(h);
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(1, Buffer.from('disk').toString('hex'))]));
    // size 1 MiB, flags HAS_FLAGS|FLUSH|FUA|TRIM|WRITE_ZEROES|MULTI_CONN|CACHE|FAST_ZERO = 0x0d6d
    assert.equal(out(h), '0000000000100000' + '0d6d');
    assert.equal(h.state, 'done');
    assert.equal(h.result?.export.name, 'disk');
  });

  it('pads the NBD_OPT_EXPORT_NAME reply with 124 zeroes when the client did not ask for NO_ZEROES', () => {
    const h = new ServerHandshake(registry());
    out(h);
    h.feed(Buffer.concat([hex('00000001'), opt(1, Buffer.from('disk').toString('hex'))]));
    assert.equal(out(h), '0000000000100000' + '0d6d' + '00'.repeat(124));
  });

  it('closes the session for an unknown export named by NBD_OPT_EXPORT_NAME', () => {
    const h = new ServerHandshake(registry());
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(1, Buffer.from('nope').toString('hex'))]));
    assert.equal(h.state, 'closed');
    assert.match(h.closeReason, /unknown export "nope"/);
  });

  it('answers NBD_OPT_GO with INFO_EXPORT, INFO_BLOCK_SIZE and ACK, then enters transmission', () => {
    const h = new ServerHandshake(registry());
    out(h);
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(7, GO_DISK)]));
    assert.equal(
      out(h),
      rep(7, 3, 12) +
        '0000' +
        '0000000000100000' +
        '0d6d' +
        rep(7, 3, 14) +
        '0003' +
        '00000001' +
        '00001000' +
        '02000000' +
        rep(7, 1, 0),
    );
    assert.equal(h.state, 'done');
  });

  it('sends NBD_INFO_NAME and NBD_INFO_DESCRIPTION when asked', () => {
    const h = new ServerHandshake(registry());
    out(h);
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(6, '00000004' + Buffer.from('disk').toString('hex') + '000200010002')]));
    const s = out(h);
    assert.ok(s.includes(rep(6, 3, 6) + '0001' + Buffer.from('disk').toString('hex')), s);
    assert.ok(s.includes(rep(6, 3, 6) + '0002' + Buffer.from('Disk').toString('hex')), s);
    assert.ok(s.endsWith(rep(6, 1, 0)));
    assert.equal(h.state, 'option-header', 'NBD_OPT_INFO stays in negotiation');
  });

  it('answers NBD_OPT_GO for an unknown export with NBD_REP_ERR_UNKNOWN and keeps negotiating', () => {
    const h = new ServerHandshake(registry());
    out(h);
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(7, '00000001' + '78' + '0000')]));
    const s = out(h);
    assert.ok(s.startsWith(rep(7, 0x80000006, s.length / 2 - 20)), s);
    assert.equal(h.state, 'option-header');
  });

  it('refuses unknown options, EXTENDED_HEADERS and (without TLS configured) STARTTLS without hanging up', () => {
    const h = new ServerHandshake(registry());
    out(h);
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(99), opt(11), opt(5)]));
    const s = out(h);
    assert.ok(s.startsWith(rep(99, 0x80000001, 26)), s);
    assert.ok(s.includes(rep(11, 0x80000001, 26)), s);
    assert.ok(s.includes(rep(5, 0x80000002, 50)), s);
    assert.equal(h.state, 'option-header');
  });

  it('lists every export with its description for NBD_OPT_LIST', () => {
    const h = new ServerHandshake(registry());
    out(h);
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(3)]));
    assert.equal(
      out(h),
      rep(3, 2, 12) +
        '00000004' +
        Buffer.from('diskDisk').toString('hex') +
        rep(3, 2, 6) +
        '00000002' +
        Buffer.from('ro').toString('hex') +
        rep(3, 1, 0),
    );
  });

  it('selects base:allocation with SET_META_CONTEXT only after STRUCTURED_REPLY', () => {
    const h = new ServerHandshake(registry());
    out(h);
    const q = Buffer.from('base:allocation').toString('hex');
    const meta = '00000004' + Buffer.from('disk').toString('hex') + '00000001' + '0000000f' + q;
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(10, meta)]));
    assert.ok(out(h).startsWith(rep(10, 0x80000003, 59)));
    h.feed(Buffer.concat([opt(8), opt(10, meta), opt(7, GO_DISK)]));
    const s = out(h);
    assert.ok(s.startsWith(rep(8, 1, 0) + rep(10, 4, 19) + '00000001' + q + rep(10, 1, 0)), s);
    assert.equal(h.state, 'done');
    assert.equal(h.result?.structuredReplies, true);
    assert.equal(h.result?.baseAllocation, true);
    assert.ok(((h.result?.flags ?? 0) & 0x80) !== 0, 'SEND_DF is advertised with structured replies');
  });

  it('lists base:allocation for the base: wildcard and ignores unknown namespaces', () => {
    const h = new ServerHandshake(registry());
    out(h);
    const query = (q: string) => {
      const qb = Buffer.from(q).toString('hex');
      return (
        '00000004' +
        Buffer.from('disk').toString('hex') +
        '00000001' +
        (qb.length / 2).toString(16).padStart(8, '0') +
        qb
      );
    };
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(8), opt(9, query('base:')), opt(9, query('qemu:dirty-bitmap:x'))]));
    const q = Buffer.from('base:allocation').toString('hex');
    assert.equal(out(h), rep(8, 1, 0) + rep(9, 4, 19) + '00000000' + q + rep(9, 1, 0) + rep(9, 1, 0));
  });

  it('marks a read-only export READ_ONLY and offers no trim or zeroes', () => {
    const h = new ServerHandshake(registry());
    out(h);
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(1, Buffer.from('ro').toString('hex'))]));
    // HAS_FLAGS|READ_ONLY|FLUSH|FUA|MULTI_CONN|CACHE = 0x050f
    assert.equal(out(h), '0000000000001000' + '050f');
  });

  it('gives the same answers when fed one byte at a time, and keeps bytes after GO for transmission', () => {
    const input = Buffer.concat([FIXED_NOZEROES, opt(8), opt(3), opt(7, GO_DISK), hex('25609513')]);
    const whole = new ServerHandshake(registry());
    whole.feed(input);
    const bytewise = new ServerHandshake(registry());
    for (const b of input) bytewise.feed(Buffer.from([b]));
    assert.equal(out(bytewise), out(whole));
    assert.equal(bytewise.rest.toString('hex'), '25609513');
    assert.equal(whole.rest.toString('hex'), '25609513');
  });

  it('closes on unknown client flags or a bad option magic', () => {
    const a = new ServerHandshake(registry());
    a.feed(hex('00000004'));
    assert.equal(a.state, 'closed');
    assert.match(a.closeReason, /client flags 0x4/);
    const b = new ServerHandshake(registry());
    b.feed(Buffer.concat([FIXED_NOZEROES, hex('00'.repeat(16))]));
    assert.equal(b.state, 'closed');
    assert.match(b.closeReason, /bad option magic/);
  });

  it('skips an oversized option and answers NBD_REP_ERR_TOO_BIG, then goes on', () => {
    const h = new ServerHandshake(registry());
    out(h);
    const big = Buffer.alloc(16 + 70000);
    big.write('IHAVEOPT', 0, 'latin1');
    big.writeUInt32BE(3, 8);
    big.writeUInt32BE(70000, 12);
    h.feed(Buffer.concat([FIXED_NOZEROES, big.subarray(0, 30000)]));
    h.feed(big.subarray(30000));
    h.feed(opt(8));
    const s = out(h);
    assert.ok(s.startsWith(rep(3, 0x80000009, s.length / 2 - 40)), s);
    assert.ok(s.endsWith(rep(8, 1, 0)));
  });

  it('acknowledges NBD_OPT_ABORT and closes cleanly', () => {
    const h = new ServerHandshake(registry());
    out(h);
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(2)]));
    assert.equal(out(h), rep(2, 1, 0));
    assert.equal(h.state, 'closed');
    assert.equal(h.clean, true);
  });
});

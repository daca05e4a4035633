/**
 * The handshake's TLS modes (proto.md "TLS support"): FORCEDTLS (`required`),
 * SELECTIVETLS (`optional`) with TLS-only exports, and the NBD_OPT_LIST
 * filter (allowed_clients, TLS-only exports before TLS).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryBackend } from '../../src/storage/backends/memory.js';
import { ExportRegistry } from '../../src/storage/exports.js';
import { ServerHandshake } from '../../src/storage/nbd/handshake.js';
import { prng } from '../helpers/prng.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const out = (h: ServerHandshake): string => {
  const s = Buffer.concat(h.out).toString('hex');
  h.out = [];
  return s;
};
const opt = (o: number, data = ''): Buffer => {
  const d = hex(data);
  const h = Buffer.alloc(16);
  h.write('IHAVEOPT', 0, 'latin1');
  h.writeUInt32BE(o, 8);
  h.writeUInt32BE(d.length, 12);
  return Buffer.concat([h, d]);
};
/** Option reply header as hex: magic, option, type (length not checked). */
const repHead = (o: number, type: number): string =>
  `0003e889045565a9${o.toString(16).padStart(8, '0')}${type.toString(16).padStart(8, '0')}`;
const ACK = 1;
const SERVER = 2;
const ERR_POLICY = 0x80000002;
const ERR_INVALID = 0x80000003;
const ERR_TLS_REQD = 0x80000005;
const FIXED_NOZEROES = hex('00000003');
const name = (n: string): string => Buffer.from(n).toString('hex');
const go = (n: string): string => n.length.toString(16).padStart(8, '0') + name(n) + '0000';

function registry(): ExportRegistry {
  const r = new ExportRegistry();
  r.add({ name: 'open', backend: new MemoryBackend({ size: 4096 }) });
  r.add({ name: 'secret', backend: new MemoryBackend({ size: 4096 }), tlsOnly: true });
  r.add({ name: 'lan', backend: new MemoryBackend({ size: 4096 }), allowClient: (a) => a === '10.0.0.1' });
  return r;
}

/** Export names in an NBD_OPT_LIST answer (hex of the whole reply stream). */
function listed(s: string): string[] {
  const b = Buffer.from(s, 'hex');
  const names: string[] = [];
  for (let p = 0; p + 20 <= b.length; ) {
    const type = b.readUInt32BE(p + 12);
    const len = b.readUInt32BE(p + 16);
    if (type === SERVER) names.push(b.toString('utf8', p + 24, p + 24 + b.readUInt32BE(p + 20)));
    p += 20 + len;
  }
  return names;
}

describe('NBD handshake with TLS', () => {
  it('in required mode refuses every option but STARTTLS and ABORT with NBD_REP_ERR_TLS_REQD', () => {
    const h = new ServerHandshake(registry(), undefined, 'required');
    out(h);
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(3), opt(7, go('open')), opt(8), opt(6, go('open'))]));
    const s = out(h);
    for (const o of [3, 7, 8, 6]) assert.ok(s.includes(repHead(o, ERR_TLS_REQD)), `option ${o}: ${s}`);
    assert.ok(!s.includes(repHead(3, SERVER)), 'no export is listed before TLS');
    assert.equal(h.state, 'option-header');
  });

  it('in required mode closes the session for NBD_OPT_EXPORT_NAME before TLS', () => {
    const h = new ServerHandshake(registry(), undefined, 'required');
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(1, name('open'))]));
    assert.equal(h.state, 'closed');
    assert.match(h.closeReason, /before TLS/);
  });

  it('acknowledges STARTTLS, waits for the TLS handshake, then negotiates afresh', () => {
    const h = new ServerHandshake(registry(), undefined, 'required');
    out(h);
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(5)]));
    assert.equal(out(h), `${repHead(5, ACK)}00000000`);
    assert.equal(h.state, 'starttls');
    h.tlsStarted();
    assert.equal(h.tls, true);
    h.feed(Buffer.concat([opt(5), opt(3)]));
    const s = out(h);
    assert.ok(s.startsWith(repHead(5, ERR_INVALID)), 'a second STARTTLS is invalid');
    assert.deepEqual(listed(s), ['open', 'secret', 'lan'], 'a unix client sees every export');
    h.feed(opt(7, go('secret')));
    assert.equal(h.state, 'done');
    assert.equal(h.result?.export.name, 'secret');
  });

  it('forgets structured replies negotiated before STARTTLS', () => {
    const h = new ServerHandshake(registry(), undefined, 'optional');
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(8), opt(5)]));
    h.tlsStarted();
    h.feed(opt(7, go('open')));
    assert.equal(h.state, 'done');
    assert.equal(h.result?.structuredReplies, false);
  });

  it('closes the session when plain bytes follow STARTTLS instead of a TLS handshake', () => {
    const h = new ServerHandshake(registry(), undefined, 'required');
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(5), opt(3)]));
    assert.equal(h.state, 'closed');
    assert.match(h.closeReason, /after NBD_OPT_STARTTLS/);
  });

  it('refuses STARTTLS with data as NBD_REP_ERR_INVALID', () => {
    const h = new ServerHandshake(registry(), undefined, 'optional');
    out(h);
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(5, '00')]));
    assert.ok(out(h).startsWith(repHead(5, ERR_INVALID)));
    assert.equal(h.state, 'option-header');
  });

  it('in optional mode serves plain exports and refuses TLS-only ones with NBD_REP_ERR_TLS_REQD', () => {
    const h = new ServerHandshake(registry(), undefined, 'optional');
    out(h);
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(3), opt(6, go('secret'))]));
    const s = out(h);
    assert.deepEqual(listed(s), ['open', 'lan'], 'TLS-only exports are left out of the list before TLS');
    assert.ok(s.includes(repHead(6, ERR_TLS_REQD)), s);
    h.feed(opt(7, go('open')));
    assert.equal(h.state, 'done');
  });

  it('in optional mode closes the session for a TLS-only export named by NBD_OPT_EXPORT_NAME', () => {
    const h = new ServerHandshake(registry(), undefined, 'optional');
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(1, name('secret'))]));
    assert.equal(h.state, 'closed');
    assert.match(h.closeReason, /TLS-only/);
  });

  it('without TLS refuses STARTTLS and TLS-only exports with NBD_REP_ERR_POLICY, never TLS_REQD', () => {
    const h = new ServerHandshake(registry());
    out(h);
    h.feed(Buffer.concat([FIXED_NOZEROES, opt(5), opt(7, go('secret'))]));
    const s = out(h);
    assert.ok(s.startsWith(repHead(5, ERR_POLICY)), s);
    assert.ok(s.includes(repHead(7, ERR_POLICY)), s);
    assert.ok(!s.includes(repHead(7, ERR_TLS_REQD)), s);
  });

  it('lists only the exports a TCP client is allowed to use', () => {
    const stranger = new ServerHandshake(registry(), '192.0.2.9');
    out(stranger);
    stranger.feed(Buffer.concat([FIXED_NOZEROES, opt(3)]));
    assert.deepEqual(listed(out(stranger)), ['open']);
    const lan = new ServerHandshake(registry(), '10.0.0.1');
    out(lan);
    lan.feed(Buffer.concat([FIXED_NOZEROES, opt(3)]));
    assert.deepEqual(listed(out(lan)), ['open', 'lan']);
  });

  it('survives 2000 seeded random option streams in both TLS modes without throwing', () => {
    const seed = Number(process.env['NBD_MODEL_SEED'] ?? 6006);
    const rand = prng(seed);
    const int = (n: number): number => Math.floor(rand() * n);
    const opts = [1, 2, 3, 5, 5, 6, 7, 8, 9, 10, 11, 99];
    for (let i = 0; i < 2000; i++) {
      const mode = int(2) ? 'required' : 'optional';
      const h = new ServerHandshake(registry(), int(2) ? '10.0.0.1' : undefined, mode);
      const parts: Buffer[] = [FIXED_NOZEROES];
      for (let k = int(8); k > 0; k--) {
        const o = opts[int(opts.length)] as number;
        const body =
          o === 6 || o === 7
            ? go(['open', 'secret', 'lan', 'x'][int(4)] as string)
            : int(4) === 0
              ? Buffer.from(Array.from({ length: int(24) }, () => int(256))).toString('hex')
              : '';
        parts.push(opt(o, body));
      }
      const stream = Buffer.concat(parts);
      for (let p = 0; p < stream.length; ) {
        const n = 1 + int(40);
        try {
          h.feed(stream.subarray(p, p + n));
          if (h.state === 'starttls') h.tlsStarted();
        } catch (err) {
          assert.fail(`seed ${seed} case ${i}: ${String(err)}`);
        }
        p += n;
      }
      assert.ok(['option-header', 'option-data', 'option-skip', 'done', 'closed'].includes(h.state), h.state);
      if (h.state === 'done') {
        assert.ok(!h.result?.export.tlsOnly || h.tls, 'a TLS-only export only over TLS');
        assert.ok(mode === 'optional' || h.tls, 'required mode: transmission only over TLS');
      }
    }
  });
});

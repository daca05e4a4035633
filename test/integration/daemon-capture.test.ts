/**
 * The daemon's data path and capture through its control API, with real
 * stream ports driven by raw `net` sockets (QEMU's framing: 4-byte big-endian
 * length, then the frame), the real client, and tshark reading a capture.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import {
  A_TO_B,
  attach,
  B_TO_A,
  BCAST_FROM_A,
  framed,
  MAC_A,
  MAC_B,
  type Running,
  startDaemon,
  stopDaemon,
  tempDirs,
  twoPortConfig,
} from '../helpers/api-daemon.js';

const dirFor = await tempDirs('vmlink-api-');
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('daemon data path and capture', () => {
  let r: Running;
  before(async () => {
    const dir = dirFor();
    r = await startDaemon(twoPortConfig(dir), dir);
  });
  after(() => stopDaemon(r));

  test('forwards a frame from one stream port to the other and learns the source MAC', async () => {
    const a = await attach(r, 'a');
    const b = await attach(r, 'b');
    a.sock.write(framed(BCAST_FROM_A));
    assert.deepEqual(await b.reader.next(), BCAST_FROM_A);
    const fdb = await r.client.fdb('lan');
    assert.deepEqual(
      fdb.map((e) => [e.network, e.mac, e.port]),
      [['lan', MAC_A, 'a']],
    );
    b.sock.write(framed(B_TO_A));
    assert.deepEqual(await a.reader.next(), B_TO_A);
    const pa = await r.client.getPort('a');
    assert.equal(pa.state, 'up');
    assert.equal(pa.counters.rx_frames, 1);
    assert.equal(pa.counters.tx_frames, 1);
    assert.equal(pa.macs, 1);
    assert.deepEqual((await r.client.status()).ports, { total: 2, up: 2 });
    const mark = r.log.lines.length;
    a.sock.destroy();
    b.sock.destroy();
    await r.log.waitFor((l) => l['port'] === 'b' && l['state'] === 'listening', mark);
    await r.log.waitFor((l) => l['port'] === 'a' && l['state'] === 'listening', mark);
  });

  test('closes a peer that sends a bad length prefix, counts it, and keeps serving', async () => {
    const a = await attach(r, 'a');
    const mark = r.log.lines.length;
    a.sock.write(hex('7fffffff'));
    await once(a.sock, 'close');
    await r.log.waitFor((l) => l['port'] === 'a' && l['state'] === 'listening', mark);
    const pa = await r.client.getPort('a');
    assert.equal(pa.counters.drops.malformed, 1);
    assert.equal((await r.client.status()).host.id, 'h1');
  });

  test('streams both directions of a port as a pcap that ends after count frames and that tshark reads', async () => {
    const a = await attach(r, 'a');
    const b = await attach(r, 'b');
    const body = await r.client.capture('a', { count: 3 });
    const chunks: Buffer[] = [];
    let got = 0;
    const header = new Promise<void>((resolve) => {
      body.on('data', (c: Buffer) => {
        chunks.push(c);
        got += c.length;
        if (got >= 24) resolve();
      });
    });
    const ended = once(body, 'end');
    await header;
    a.sock.write(framed(BCAST_FROM_A)); // rx on a
    assert.deepEqual(await b.reader.next(), BCAST_FROM_A);
    b.sock.write(framed(B_TO_A)); // tx on a
    assert.deepEqual(await a.reader.next(), B_TO_A);
    a.sock.write(framed(A_TO_B)); // rx on a
    assert.deepEqual(await b.reader.next(), A_TO_B);
    await ended;
    const pcap = Buffer.concat(chunks);
    assert.equal(
      pcap.subarray(0, 24).toString('hex'),
      'd4c3b2a1' + '0200' + '0400' + '00000000' + '00000000' + '00000400' + '01000000',
    );
    let at = 24;
    for (const f of [BCAST_FROM_A, B_TO_A, A_TO_B]) {
      assert.equal(pcap.readUInt32LE(at + 8), f.length, 'captured length');
      assert.equal(pcap.readUInt32LE(at + 12), f.length, 'original length');
      assert.deepEqual(pcap.subarray(at + 16, at + 16 + f.length), f);
      at += 16 + f.length;
    }
    assert.equal(at, pcap.length, 'exactly three records');

    const file = join(r.dir, 'a.pcap');
    await writeFile(file, pcap);
    const { stdout } = await promisify(execFile)('tshark', [
      '-r',
      file,
      '-T',
      'fields',
      '-e',
      'eth.src',
      '-e',
      'eth.dst',
    ]);
    assert.deepEqual(stdout.trim().split('\n'), [
      `${MAC_A}\tff:ff:ff:ff:ff:ff`,
      `${MAC_B}\t${MAC_A}`,
      `${MAC_A}\t${MAC_B}`,
    ]);
    const mark = r.log.lines.length;
    a.sock.destroy();
    b.sock.destroy();
    await r.log.waitFor((l) => l['port'] === 'b' && l['state'] === 'listening', mark);
    await r.log.waitFor((l) => l['port'] === 'a' && l['state'] === 'listening', mark);
  });

  test('removes the capture tap when the client goes away', async () => {
    const ac = new AbortController();
    const body = await r.client.capture('b', { signal: ac.signal });
    body.on('error', () => undefined);
    body.resume();
    ac.abort();
    const line = await r.log.waitFor((l) => l['msg'] === 'capture ended' && l['port'] === 'b');
    assert.equal(line['reason'], 'the client went away');
  });

  test('drops and counts capture records while the client does not read, instead of buffering them', async () => {
    await r.client.createNetwork({ name: 'jumbo', vni: 90, mtu: 9000 });
    const listen = `unix:${join(r.dir, 'j.sock')}`;
    await r.client.addPort({ name: 'j', kind: 'stream', network: 'jumbo', listen });
    const body = await r.client.capture('j');
    body.on('error', () => undefined);
    body.pause(); // the client stops reading: the daemon must not queue 18 MB for it
    const mark = r.log.lines.length;
    const sock = connect(join(r.dir, 'j.sock'));
    await once(sock, 'connect');
    const frame = Buffer.alloc(9014, 0x5a);
    BCAST_FROM_A.copy(frame, 0, 0, 14);
    const total = 2000;
    for (let i = 0; i < total; i++) sock.write(framed(frame));
    // Wait (by asking, not by sleeping) until the switch has seen every frame.
    while ((await r.client.getPort('j')).counters.rx_frames < total) await new Promise(setImmediate);
    body.destroy();
    const line = await r.log.waitFor((l) => String(l['msg']).startsWith('capture ended') && l['port'] === 'j', mark);
    assert.ok((line['dropped'] as number) > 0, 'some records were dropped');
    assert.equal((line['frames'] as number) + (line['dropped'] as number), total);
    sock.destroy();
    await r.client.deletePort('j');
    await r.client.deleteNetwork('jumbo');
  });

  test('ends a running capture when its port is deleted', async () => {
    await r.client.addPort({ name: 'tmp', kind: 'stream', network: 'lan', listen: `unix:${join(r.dir, 'tmp.sock')}` });
    const body = await r.client.capture('tmp');
    body.resume();
    const ended = once(body, 'end');
    await r.client.deletePort('tmp');
    await ended;
  });
});

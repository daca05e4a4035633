import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { portSchema } from '../../src/config/schema.js';
import { silentLogger } from '../../src/log.js';
import { DEFAULT_QUEUE_LEN, MAX_FRAME_LEN, type Port, type PortState } from '../../src/net/port.js';
import { tapPort } from '../../src/net/ports/tap.js';
import { VDE_REQUEST_LEN, vdePort } from '../../src/net/ports/vde.js';
import { Switch } from '../../src/net/switch/switch.js';
import { Netns, uniqueIfname } from '../helpers/netns.js';

const logger = silentLogger();

/** A vde_plug process joined to DIR, speaking its stdin/stdout stream (2-byte big-endian length + frame). */
class Plug {
  readonly child: ChildProcessWithoutNullStreams;
  #buf = Buffer.alloc(0);
  #waiters: ((f: Buffer) => void)[] = [];
  #frames: Buffer[] = [];

  constructor(dir: string) {
    this.child = spawn('vde_plug', [dir]);
    this.child.stdout.on('data', (d: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, d]);
      while (this.#buf.length >= 2 && this.#buf.length >= 2 + this.#buf.readUInt16BE(0)) {
        const len = this.#buf.readUInt16BE(0);
        const f = Buffer.from(this.#buf.subarray(2, 2 + len));
        this.#buf = this.#buf.subarray(2 + len);
        const w = this.#waiters.shift();
        if (w) w(f);
        else this.#frames.push(f);
      }
    });
  }

  send(frame: Buffer): void {
    const len = Buffer.alloc(2);
    len.writeUInt16BE(frame.length);
    this.child.stdin.write(Buffer.concat([len, frame]));
  }

  /** The next frame this plug receives. */
  next(): Promise<Buffer> {
    const f = this.#frames.shift();
    if (f) return Promise.resolve(f);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve();
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill();
    return exited;
  }
}

/** An Ethernet frame from `src` to `dst` (hex MACs) with a payload of `n` bytes of `fill`. */
function frame(dst: string, src: string, fill: number, n = 60): Buffer {
  const f = Buffer.alloc(14 + n, fill);
  f.write(dst, 0, 'hex');
  f.write(src, 6, 'hex');
  f.writeUInt16BE(0x88b5, 12); // local experimental ethertype
  return f;
}

describe('VDE port', { timeout: 60_000 }, () => {
  const sw = new Switch({ logger });
  let dir: string;
  const states = new Map<string, PortState>();
  const waiters: { name: string; state: PortState; resolve: () => void }[] = [];
  const plugs: Plug[] = [];

  function addVde(name: string): Port {
    const sp = sw.addPort(name, { network: 'lan' }, (sink, p) =>
      vdePort(
        { name, dir: join(dir, name) },
        {
          sink,
          onState: (s) => {
            sw.portState(p, s);
            states.set(name, s);
            for (const w of waiters.filter((x) => x.name === name && x.state === s)) {
              waiters.splice(waiters.indexOf(w), 1);
              w.resolve();
            }
          },
          logger,
          maxFrameLen: MAX_FRAME_LEN,
          queueLen: DEFAULT_QUEUE_LEN,
          onMalformed: (r) => sw.malformed(p, r),
        },
      ),
    );
    return sp.port;
  }

  function reach(name: string, state: PortState): Promise<void> {
    if (states.get(name) === state) return Promise.resolve();
    return new Promise((resolve) => waiters.push({ name, state, resolve }));
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'vmlink-vde-'));
    sw.addNetwork({ name: 'lan', vni: 1, mtu: 1500 });
    await addVde('a').open();
    await addVde('b').open();
  });

  after(async () => {
    for (const p of plugs) await p.stop();
    for (const sp of sw.ports()) await sw.removePort(sp.name);
    rmSync(dir, { recursive: true, force: true });
  });

  test('real vde_plug processes connect, and frames cross the switch between them both ways', async () => {
    const upA = reach('a', 'up');
    const upB = reach('b', 'up');
    const pa = new Plug(join(dir, 'a'));
    const pb = new Plug(join(dir, 'b'));
    plugs.push(pa, pb);
    await Promise.all([upA, upB]);
    const bcast = frame('ffffffffffff', '020000000001', 0xa1);
    pa.send(bcast);
    assert.deepEqual(await pb.next(), bcast);
    const uni = frame('020000000001', '020000000002', 0xb2, 1000);
    pb.send(uni); // a's MAC was learned: unicast to port a
    assert.deepEqual(await pa.next(), uni);
    assert.equal(sw.port('a').counters.rxFrames, 1);
    assert.equal(sw.port('a').counters.txFrames, 1);
  });

  test('a control connection with a bad magic or version is closed and counted, and the port keeps working', async () => {
    const badMagic = Buffer.alloc(VDE_REQUEST_LEN);
    badMagic.writeUInt32LE(0xdeadbeef, 0);
    const badVersion = Buffer.alloc(VDE_REQUEST_LEN);
    badVersion.writeUInt32LE(0xfeedface, 0);
    badVersion.writeUInt32LE(2, 4);
    for (const bad of [badMagic, badVersion]) {
      const s = connect(join(dir, 'a', 'ctl'));
      await new Promise<void>((resolve) => s.once('connect', () => resolve()));
      const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
      s.on('error', () => undefined);
      s.write(bad);
      await closed;
    }
    assert.equal(sw.port('a').counters.malformed, 2);
    const [pa, pb] = plugs as [Plug, Plug];
    const f = frame('020000000002', '020000000001', 0xc3);
    pa.send(f);
    assert.deepEqual(await pb.next(), f);
  });

  test('a plug that exits leaves its port listening and frames to it count as down', async () => {
    const pb = plugs[1] as Plug;
    const listening = reach('b', 'listening');
    await pb.stop();
    await listening;
    // The tap on port a sees the frame arrive; the switch floods it in the same call, so after it returns the count is in.
    const received = new Promise<void>((resolve) => {
      sw.port('a').taps.push({ frame: (_b, _o, _l, dir) => dir === 'rx' && queueMicrotask(resolve) });
    });
    (plugs[0] as Plug).send(frame('ffffffffffff', '020000000001', 0xd4));
    await received;
    assert.equal(sw.port('b').counters.down, 1);
  });

  test("a namespace behind a vmlink TAP port pings one behind vde_plug's own TAP through the VDE port", async () => {
    const ns1 = await Netns.create('vde1');
    const ns2 = await Netns.create('vde2');
    const vmTap = uniqueIfname('vlv');
    const plugTap = uniqueIfname('vlp');
    try {
      const sp = sw.addPort('t', { network: 'lan' }, (sink, p) =>
        tapPort(
          { name: 't', ifname: vmTap },
          {
            sink,
            onState: (st) => sw.portState(p, st),
            logger,
            maxFrameLen: MAX_FRAME_LEN,
            queueLen: DEFAULT_QUEUE_LEN,
            onMalformed: (r) => sw.malformed(p, r),
          },
        ),
      );
      await sp.port.open();
      await ns1.adopt(vmTap, '10.89.0.1/24');
      await addVde('c').open();
      // tap:// first: vde_plug opens its ends in order, so once port c is up the TAP exists.
      const up = reach('c', 'up');
      const child = spawn('vde_plug', [`tap://${plugTap}`, `vde://${join(dir, 'c')}`], { stdio: 'ignore' });
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      try {
        await up;
        await ns2.adopt(plugTap, '10.89.0.2/24');
        const { stdout } = await ns1.exec('ping', '-c', '3', '-i', '0.2', '-W', '5', '10.89.0.2');
        assert.match(stdout, / 0% packet loss/);
        assert.ok(sw.port('c').counters.rxFrames >= 3);
      } finally {
        child.kill();
        await exited;
      }
    } finally {
      await ns1.delete();
      await ns2.delete();
    }
  });

  test('the config schema accepts a vde port with an absolute dir and refuses a relative one', () => {
    assert.equal(portSchema.safeParse({ kind: 'vde', name: 'v', network: 'lan', dir: '/run/vde/v' }).success, true);
    assert.equal(portSchema.safeParse({ kind: 'vde', name: 'v', network: 'lan', dir: 'run/vde' }).success, false);
  });
});

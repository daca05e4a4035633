/**
 * `vmlink top` as a person runs it: under a pseudo-terminal, against the
 * daemon (a child process) with real traffic through its stream ports. The
 * busy port is first with its drop reason, the frame fits the window and
 * follows a resize, `q` and Ctrl-C exit 0 with the terminal's modes put back;
 * `--once` to a pipe prints one plain frame.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { LinkView } from '../../src/api/client.js';
import { BIN, broadcastFrame, cliOf, StreamPeer, suiteDaemon } from '../helpers/cli-daemon.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { untilAsync } from '../helpers/overlay-rig.js';
import { frames, PtyCommand } from '../helpers/pty.js';
import { freeTcpPort } from '../helpers/vm.js';

const LEAVE = '\x1b[?25h\x1b[?1049l';
const ENTER = '\x1b[?1049h\x1b[?25l';

/** The first port row under the PORT header of a frame, or undefined. */
function firstPortRow(frame: string[]): string | undefined {
  const i = frame.findIndex((l) => l.startsWith('PORT '));
  return i < 0 ? undefined : frame[i + 1];
}

describe('vmlink top', () => {
  const d = suiteDaemon();
  const cli = cliOf(d);
  const peers: StreamPeer[] = [];
  const timers: NodeJS.Timeout[] = [];
  const ptys: PtyCommand[] = [];

  before(async () => {
    // zbusy (network lab) floods many frames plus some over the MTU; aquiet (network other) sends a few.
    // Different networks, so aquiet's transmit never mirrors zbusy's receive; the names put the busy port last
    // alphabetically, so only its rate can put it first.
    assert.equal((await cli('network', 'create', 'other', '--vni', '200')).code, 0);
    for (const [name, net] of [
      ['zbusy', 'lab'],
      ['aquiet', 'other'],
      ['idle', 'lab'],
    ] as const) {
      const r = await cli(
        'port',
        'add',
        name,
        '--kind',
        'stream',
        '--network',
        net,
        '--listen',
        `unix:${join(d.dir, `${name}.sock`)}`,
      );
      assert.equal(r.code, 0, r.stderr);
    }
    const busy = await StreamPeer.connect(join(d.dir, 'zbusy.sock'));
    const quiet = await StreamPeer.connect(join(d.dir, 'aquiet.sock'));
    peers.push(busy, quiet);
    const small = broadcastFrame('02000000000b');
    const big = Buffer.concat([small.subarray(0, 14), Buffer.alloc(1600, 0xee)]); // payload over the 1500 MTU
    timers.push(
      setInterval(() => {
        for (let i = 0; i < 20; i++) busy.send(small);
        busy.send(big);
      }, 10),
      setInterval(() => quiet.send(broadcastFrame('02000000000c')), 200),
    );
  });

  after(() => {
    for (const t of timers) clearInterval(t);
    for (const p of peers) p.close();
    for (const p of ptys) p.kill();
  });

  const top = (...args: string[]): PtyCommand => {
    const p = new PtyCommand([process.execPath, BIN, '--control', d.control, 'top', ...args], { rows: 30, cols: 150 });
    ptys.push(p);
    return p;
  };

  test('shows the busy port first with its drop reason, fits the window and a resize, and quits on q with the terminal restored', async () => {
    const p = top('--interval', '0.5');
    await p.waitFor((o) => frames(o).some((f) => /^zbusy\s+stream\s+lab\s+up\s.*mtu:/.test(firstPortRow(f) ?? '')));
    const frame = frames(p.output).at(-1) ?? [];
    assert.match(frame[0] ?? '', /^vmlink top - host clitest - 4 ports, 0 links - every 0.5s, by rate - q quits/);
    assert.ok(frame.length <= 30 && frame.every((l) => l.length <= 150), frame.join('\n'));
    assert.ok(p.output.startsWith(ENTER), 'alternate screen on and cursor hidden first');

    // A smaller window: the next frames fit it (SIGWINCH redraws at once).
    const before = frames(p.output).length;
    p.resize(6, 40);
    await p.waitFor((o) =>
      frames(o)
        .slice(before)
        .some((f) => f.length === 6 && f.every((l) => l.length <= 40)),
    );
    const small = frames(p.output).at(-1) ?? [];
    assert.ok(small.length <= 6 && small.every((l) => l.length <= 40), small.join('\n'));
    assert.match(small.join('\n'), /\.\.\. \d+ more/);

    p.type('q');
    const r = await p.ended();
    assert.equal(r.code, 0);
    assert.ok(r.rawSeen, 'raw mode while it ran');
    assert.ok(r.restored, 'terminal modes put back');
    assert.ok(
      p.output.endsWith(LEAVE),
      `ends by showing the cursor and leaving the alternate screen: ${JSON.stringify(p.output.slice(-40))}`,
    );
  });

  test('quits on Ctrl-C with status 0 and the terminal restored', async () => {
    const p = top('--sort', 'name');
    await p.waitFor((o) => frames(o).some((f) => firstPortRow(f)?.startsWith('aquiet') === true));
    p.type('\x03');
    const r = await p.ended();
    assert.deepEqual(r, { code: 0, restored: true, rawSeen: true });
    assert.ok(p.output.endsWith(LEAVE));
  });

  test('ends on SIGTERM with status 0 and the terminal restored', async () => {
    const p = top();
    await p.waitFor((o) => frames(o).some((f) => firstPortRow(f) !== undefined));
    p.signal('SIGTERM');
    const r = await p.ended();
    assert.deepEqual(r, { code: 0, restored: true, rawSeen: true });
    assert.ok(p.output.endsWith(LEAVE));
  });

  test('--once to a pipe prints one plain frame with the busy port first', async () => {
    const r = await cli('top', '--once', '--interval', '0.5');
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, /\x1b/, 'no escape codes');
    const lines = r.stdout.trimEnd().split('\n');
    assert.match(
      lines[0] ?? '',
      /^vmlink top - host clitest - 4 ports, 0 links - every 0.5s, by rate {3}\d\d:\d\d:\d\d$/,
    );
    assert.match(firstPortRow(lines) ?? '', /^zbusy\s+stream\s+lab\s+up\s+\S+\s+\S+\s+[1-9]/);
  });

  test('refuses a bad --interval or --sort with status 2', async () => {
    const a = await cli('top', '--interval', '0');
    assert.equal(a.code, 2);
    assert.match(a.stderr, /--interval "0"/);
    const b = await cli('top', '--sort', 'speed');
    assert.equal(b.code, 2);
    assert.match(b.stderr, /--sort "speed" is not one of: rate, rx, tx, frames, drops, name/);
  });
});

describe('vmlink top with a link to a second daemon', { timeout: 180_000 }, () => {
  let a: TestDaemon;
  let b: TestDaemon;
  let peer: StreamPeer | undefined;
  let timer: NodeJS.Timeout | undefined;
  let p: PtyCommand | undefined;

  before(async () => {
    const bPort = await freeTcpPort();
    const net = [{ name: 'lab', vni: 100 }];
    b = await startDaemon({
      hostId: 'b',
      networks: net,
      extra: () => ({ overlay: { listen: `tcp:127.0.0.1:${bPort}`, plain: true } }),
    });
    a = await startDaemon({
      hostId: 'a',
      networks: net,
      ports: (dir) => [{ name: 'vm1', network: 'lab', kind: 'stream', listen: `unix:${join(dir, 'vm1.sock')}` }],
      extra: () => ({ overlay: { plain: true }, links: [{ name: 'to-b', connect: `tcp:127.0.0.1:${bPort}` }] }),
    });
    await untilAsync('link to-b up', async () =>
      (await a.json<{ links: LinkView[] }>(['link', 'list'])).links.some((l) => l.name === 'to-b' && l.state === 'up'),
    );
    peer = await StreamPeer.connect(a.path('vm1.sock'));
    const frame = broadcastFrame('02000000000d');
    const from = peer;
    timer = setInterval(() => {
      for (let i = 0; i < 10; i++) from.send(frame);
    }, 10);
  });

  after(async () => {
    if (timer) clearInterval(timer);
    peer?.close();
    p?.kill();
    await a?.cleanup();
    await b?.cleanup();
  });

  test('shows the link with its peer, transmit rate and RTT, and carries on saying why when the daemon goes away', async () => {
    p = new PtyCommand([process.execPath, BIN, '--control', a.control, 'top', '--interval', '0.5'], {
      rows: 24,
      cols: 140,
    });
    const linkRow = (f: string[]) => f[f.findIndex((l) => l.startsWith('LINK ')) + 1] ?? '';
    // A flood from vm1 crosses the link: to-b transmits (TX bit/s, the 6th column, not 0).
    await p.waitFor((o) => frames(o).some((f) => /^to-b\s+tcp\s+b\s+up\s+\S+\s+(?!0\s)\S+\s.*ms$/.test(linkRow(f))));
    assert.match(frames(p.output).at(-1)?.[0] ?? '', /^vmlink top - host a - 1 port, 1 link /);

    await a.stop();
    await p.waitFor((o) => frames(o).some((f) => /^! cannot read the daemon: /.test(f[1] ?? '')));
    p.type('q');
    const r = await p.ended();
    assert.deepEqual(r, { code: 0, restored: true, rawSeen: true });
  });
});

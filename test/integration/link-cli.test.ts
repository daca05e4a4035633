/**
 * Links through the real daemon and the `vmlink` command: link add/list/
 * delete with their errors and codes, the config checks, the plain-mode
 * warning, garbage on the link listener, and the CA commands.
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { LinkView } from '../../src/api/client.js';
import { runCli, startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { until, untilAsync } from '../helpers/overlay-rig.js';
import { freeTcpPort } from '../helpers/vm.js';

describe('vmlink link with two daemons', { timeout: 120_000 }, () => {
  let a: TestDaemon;
  let b: TestDaemon;
  let bPort: number;
  const links = async (d: TestDaemon) => (await d.json<{ links: LinkView[] }>(['link', 'list'])).links;

  before(async () => {
    bPort = await freeTcpPort();
    b = await startDaemon({
      hostId: 'b',
      networks: [{ name: 'lab', vni: 100 }],
      extra: () => ({ overlay: { listen: `tcp:127.0.0.1:${bPort}`, plain: true } }),
    });
    a = await startDaemon({
      hostId: 'a',
      networks: [{ name: 'lab', vni: 100 }],
      extra: () => ({ overlay: { plain: true }, links: [{ name: 'cfg', connect: 'tcp:127.0.0.1:1' }] }),
    });
  });

  after(async () => {
    await a?.cleanup();
    await b?.cleanup();
  });

  test('plain mode says loudly that links are unauthenticated', () => {
    assert.match(a.log, /PLAIN TCP.*no encryption, no authentication/);
  });

  test('link add dials the peer; link list --json shows it up with its networks', async () => {
    const r = await a.cli(['link', 'add', 'b', '--connect', `tcp:127.0.0.1:${bPort}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /link "b" added/);
    await untilAsync('link b up', async () => (await links(a)).find((l) => l.name === 'b')?.state === 'up');
    const l = (await links(a)).find((x) => x.name === 'b') as LinkView;
    assert.equal(l.peer, 'b');
    assert.equal(l.source, 'api');
    assert.deepEqual(l.networks, ['lab']);
    assert.equal(l.transport, 'tcp');
    const onB = await links(b);
    assert.equal(onB[0]?.peer, 'a');
    assert.equal(onB[0]?.mode, 'accept');
    const table = await a.cli(['link', 'list']);
    assert.match(table.stdout, /NAME\s+STATE\s+PEER/);
    assert.match(table.stdout, /\bb\s+up\s+b\b/);
  });

  test('a configured link that cannot connect keeps re-dialling and says why', async () => {
    const l = (await links(a)).find((x) => x.name === 'cfg') as LinkView;
    assert.equal(l.state, 'connecting');
    assert.match(l.reason, /ECONNREFUSED|refused/);
  });

  test('refuses bad input with stable codes, and the daemon stays up', async () => {
    const dup = await a.cli(['link', 'add', 'b', '--connect', `tcp:127.0.0.1:${bPort}`]);
    assert.equal(dup.code, 1);
    assert.match(dup.stderr, /already exists/);
    const bad = await a.cli(['link', 'add', 'x', '--connect', 'tcp:nohost']);
    assert.equal(bad.code, 2);
    const cfg = await a.cli(['link', 'delete', 'cfg']);
    assert.equal(cfg.code, 1);
    assert.match(cfg.stderr, /declared in the config file/);
    const none = await a.cli(['link', 'delete', 'nope']);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /does not exist/);
    // Straight to the API: the codes.
    const { ControlClient } = await import('../../src/api/client.js');
    const c = new ControlClient({ socketPath: a.control });
    try {
      await assert.rejects(c.addLink({ name: '-bad', connect: 'tcp:1.2.3.4:5' }), { code: 'ERR_CONFIG_INVALID' });
      await assert.rejects(c.addLink({ name: 'b', connect: `tcp:127.0.0.1:${bPort}` }), { code: 'ERR_LINK_EXISTS' });
      await assert.rejects(c.deleteLink('cfg'), { code: 'ERR_LINK_NOT_DELETABLE' });
      await assert.rejects(c.deleteLink('nope'), { code: 'ERR_LINK_NOT_FOUND' });
      await assert.rejects(c.addLink({ name: 'v', connect: 'udp:127.0.0.1:4789' }), { code: 'ERR_OVERLAY_OFF' });
    } finally {
      await c.close();
    }
    assert.equal((await a.cli(['status'])).code, 0);
  });

  test('garbage on the link listener is refused with a log line; the link and the daemon carry on', async () => {
    const s = connect(bPort, '127.0.0.1');
    s.on('error', () => undefined);
    s.resume(); // read, so the close is seen
    await new Promise((r) => s.once('connect', r));
    s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((r) => s.once('close', r));
    await until('logged', () =>
      /closing link connection with tcp:127\.0\.0\.1:\d+: unknown record type 47/.test(b.log),
    );
    assert.equal((await links(b))[0]?.state, 'up');
    assert.equal((await b.cli(['status'])).code, 0);
  });

  test('a network created on both hosts joins the link at once; deleting it on one host leaves the link carrying the rest', async () => {
    for (const d of [a, b]) assert.equal((await d.cli(['network', 'create', 'late', '--vni', '500'])).code, 0);
    const carries = async (d: TestDaemon, nets: string[]) =>
      JSON.stringify(((await links(d)).find((l) => l.state === 'up')?.networks ?? []).sort()) === JSON.stringify(nets);
    await untilAsync('a carries late', () => carries(a, ['lab', 'late']));
    await untilAsync('b carries late', () => carries(b, ['lab', 'late']));
    // The link ports do not hold the network: deleting it works while the link is up.
    const del = await b.cli(['network', 'delete', 'late']);
    assert.equal(del.code, 0, del.stderr);
    await untilAsync('a stopped carrying late', () => carries(a, ['lab']));
    assert.ok(await carries(b, ['lab']));
    assert.equal((await a.cli(['network', 'delete', 'late'])).code, 0);
  });

  test('a link added with link add comes back after a daemon restart (state store)', async () => {
    await a.stop();
    await a.start();
    await untilAsync(
      'link b restored and up',
      async () => (await links(a)).find((l) => l.name === 'b')?.state === 'up',
    );
    assert.equal((await links(a)).find((l) => l.name === 'b')?.source, 'api');
  });

  test('an accepted link cannot be deleted on the accepting host', async () => {
    const r = await b.cli(['link', 'delete', 'a']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /the peer dialled this host/);
  });

  test('link delete closes the link on both ends', async () => {
    const r = await a.cli(['link', 'delete', 'b']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!(await links(a)).some((l) => l.name === 'b'));
    await untilAsync('b forgot a', async () => (await links(b)).length === 0);
    // And it stays deleted across a restart.
    await a.stop();
    await a.start();
    assert.ok(!(await links(a)).some((l) => l.name === 'b'));
  });

  test('a daemon without an overlay section refuses link add', async () => {
    const d = await startDaemon({ hostId: 'c' });
    try {
      const r = await d.cli(['link', 'add', 'x', '--connect', 'tcp:127.0.0.1:9']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /no overlay section/);
      assert.deepEqual((await d.json<{ links: unknown[] }>(['link', 'list'])).links, []);
    } finally {
      await d.cleanup();
    }
  });
});

describe('link configuration checks and the CA commands', { timeout: 60_000 }, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-linkcfg-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('a config with links but neither TLS material nor plain: true is refused, naming the field', async () => {
    const cfg = join(dir, 'bad.yaml');
    await writeFile(
      cfg,
      `host: { id: a, control: ${dir}/c.sock, state_dir: ${dir}/s }\noverlay: { listen: "tcp:127.0.0.1:0" }\nlinks:\n  - { name: b, connect: "tcp:127.0.0.1:7400" }\n  - { name: b, connect: "udp:127.0.0.1:4789" }\n`,
    );
    const r = await runCli(['daemon', '--config', cfg]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /overlay\.tls: links use TLS by default/);
    assert.match(r.stderr, /links\[1\]\.name: duplicate link name "b"/);
    assert.match(r.stderr, /links\[1\]\.connect: a udp: link is a VXLAN link/);
  });

  test('a daemon whose TLS files are missing does not start and says which', async () => {
    const cfg = join(dir, 'notls.yaml');
    await writeFile(
      cfg,
      `host: { id: a, control: ${dir}/c2.sock, state_dir: ${dir}/s2 }\noverlay: { tls: { ca: ${dir}/none/ca.pem, cert: ${dir}/none/a.pem, key: ${dir}/none/a.key } }\n`,
    );
    const r = await runCli(['daemon', '--config', cfg]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /overlay\.tls\.ca: cannot read/);
  });

  // A busy overlay.listen does not stop the start (the listener is down and retried): overlay-daemon.test.ts.
  test('a VXLAN address in use stops the start with its own code, naming the field', async () => {
    const udp = createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
    try {
      const host = `host: { id: a, control: ${dir}/c3.sock, state_dir: ${dir}/s3 }`;
      const cfg = join(dir, 'inuse.yaml');
      await writeFile(
        cfg,
        `${host}\noverlay: { plain: true, vxlan: { listen: "udp:127.0.0.1:${udp.address().port}" } }\n`,
      );
      const v = await runCli(['daemon', '--config', cfg]);
      assert.notEqual(v.code, 0);
      assert.match(v.stdout + v.stderr, /overlay\.vxlan\.listen: cannot bind: .*EADDRINUSE.*ERR_VXLAN_CONFIG/);
    } finally {
      udp.close();
    }
  });

  test('ca init refuses to overwrite a CA; host cert refuses a bad host id and a missing CA', async () => {
    const ca = join(dir, 'ca');
    assert.equal((await runCli(['ca', 'init', '--dir', ca])).code, 0);
    const again = await runCli(['ca', 'init', '--dir', ca]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already holds a CA/);
    const bad = await runCli(['host', 'cert', '../x', '--ca-dir', ca, '--out', join(dir, 'o')]);
    assert.equal(bad.code, 2); // a usage error (docs/cli.md "Exit status")
    assert.match(bad.stderr, /not a host id/);
    const noCa = await runCli(['host', 'cert', 'a', '--ca-dir', join(dir, 'nothing'), '--out', join(dir, 'o')]);
    assert.equal(noCa.code, 1);
    assert.match(noCa.stderr, /holds no CA/);
    const ok = await runCli(['host', 'cert', 'a', '--ca-dir', ca, '--out', join(dir, 'o')]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /tls: \{ ca: .*ca\.pem, cert: .*a\.pem, key: .*a\.key \}/);
  });
});

/**
 * TLS links as a user sets them up with the CLI (`vmlink ca init`, `vmlink
 * host cert`, `vmlink link add`): the accepting side lists its link as
 * `tls:` too, and a host whose certificate comes from another CA is told so in
 * words on the dialling side ("not from your overlay.tls.ca"), not only as
 * OpenSSL's code.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { LinkView } from '../../src/api/client.js';
import { runCli, startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { untilAsync } from '../helpers/overlay-rig.js';
import { freeTcpPort } from '../helpers/vm.js';

/** Runs a CLI command that must succeed. */
async function ok(args: string[]): Promise<void> {
  const r = await runCli(args);
  assert.equal(r.code, 0, `vmlink ${args.join(' ')}: ${r.stderr}`);
}

describe('TLS links set up with the CLI', { timeout: 180_000 }, () => {
  let dir: string;
  const daemons: TestDaemon[] = [];
  let a: TestDaemon;
  let b: TestDaemon;
  let m: TestDaemon;
  let bPort: number;
  const links = async (d: TestDaemon) => (await d.json<{ links: LinkView[] }>(['link', 'list'])).links;
  const tls = (certs: string, id: string, ca = join(certs, 'ca.pem')) => ({
    ca,
    cert: join(certs, `${id}.pem`),
    key: join(certs, `${id}.key`),
  });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-tls-cli-'));
    await ok(['ca', 'init', '--dir', join(dir, 'ca')]);
    await ok(['ca', 'init', '--dir', join(dir, 'other-ca')]);
    // Each host's key is made in its own directory (as on its own machine).
    for (const id of ['a', 'b']) await ok(['host', 'cert', id, '--ca-dir', join(dir, 'ca'), '--out', join(dir, id)]);
    await ok(['host', 'cert', 'm', '--ca-dir', join(dir, 'other-ca'), '--out', join(dir, 'm')]);
    bPort = await freeTcpPort();
    const nets = [{ name: 'lab', vni: 100 }];
    b = await startDaemon({
      hostId: 'b',
      networks: nets,
      extra: () => ({ overlay: { listen: `tcp:127.0.0.1:${bPort}`, tls: tls(join(dir, 'b'), 'b') } }),
    });
    daemons.push(b);
    a = await startDaemon({
      hostId: 'a',
      networks: nets,
      extra: () => ({ overlay: { tls: tls(join(dir, 'a'), 'a') } }),
    });
    daemons.push(a);
    m = await startDaemon({
      hostId: 'm',
      networks: nets,
      extra: () => ({ overlay: { tls: tls(join(dir, 'm'), 'm') } }),
    });
    daemons.push(m);
  });

  after(async () => {
    await Promise.all(daemons.map((d) => d.cleanup()));
    await rm(dir, { recursive: true, force: true });
  });

  test('both ends of a TLS link list its address as tls:, the accepting end too', async () => {
    const add = await a.cli(['link', 'add', 'b', '--connect', `tcp:127.0.0.1:${bPort}`]);
    assert.equal(add.code, 0, add.stderr);
    await untilAsync('link up on b', async () => (await links(b)).some((l) => l.peer === 'a' && l.state === 'up'));
    const onA = await a.cli(['link', 'list']);
    assert.match(onA.stdout, /^b\s+up\s+b\s+tls:127\.0\.0\.1:\d+\s/m);
    const onB = await b.cli(['link', 'list']);
    assert.match(onB.stdout, /^\S+\s+up\s+a\s+tls:127\.0\.0\.1:\d+\s/m);
    // `link list --json` gives the accepted link's address as tls: too, not only the table.
    const accepted = (await links(b)).find((l) => l.peer === 'a');
    assert.equal(accepted?.mode, 'accept');
    assert.match(accepted?.address ?? '', /^tls:127\.0\.0\.1:\d+$/);
  });

  test('a peer with a certificate from another CA: the dialling side says it is not from overlay.tls.ca', async () => {
    const add = await m.cli(['link', 'add', 'b', '--connect', `tcp:127.0.0.1:${bPort}`]);
    assert.equal(add.code, 0, add.stderr);
    let reason = '';
    await untilAsync('the refusal explained', async () => {
      reason = (await links(m)).find((l) => l.name === 'b')?.reason ?? '';
      return /overlay\.tls\.ca/.test(reason);
    });
    assert.match(reason, /this peer's certificate is not from your overlay\.tls\.ca/);
    assert.match(
      reason,
      /\((SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)\)/,
    );
    assert.notEqual((await links(m)).find((l) => l.name === 'b')?.state, 'up');
  });
});

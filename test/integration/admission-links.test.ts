/**
 * Connection admission of the link listener, TLS and plain: a flood of
 * connections that never send a hello, from two loopback sources, fills
 * each source's cap and then the listener, and is kept that way (what the
 * listener closes is opened again); yet a real peer daemon's link comes up
 * (its connection takes the place of one of the flood's, which hold more
 * connections per source). The flood's connections are closed at the hello deadline or
 * evicted, and every refusal is counted in `vmlink status --json`.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { LinkView, StatusView } from '../../src/api/client.js';
import { caInit, hostCert } from '../../src/pki/ca.js';
import type { AdmissionStatus } from '../../src/util/admission.js';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { Flood } from '../helpers/flood.js';
import { until, untilAsync } from '../helpers/overlay-rig.js';
import { freeTcpPort } from '../helpers/vm.js';

/** Two sources of PER_SOURCE connections each fill the listener's MAX places. */
const SOURCES = ['127.0.0.3', '127.0.0.4'];
const PER_SOURCE_FLOOD = 50;
const MAX = 16;
const PER_SOURCE = 8;
/** Connections the flood opens again as the listener closes its own, while the peer links up. */
const RENEWALS = 200;

for (const mode of ['tls', 'plain'] as const) {
  describe(`link listener admission (${mode}) under a flood that never says hello`, { timeout: 120_000 }, () => {
    let pki: string;
    let a: TestDaemon;
    let b: TestDaemon | undefined;
    let port: number;
    const floods: Flood[] = [];
    const overlay = async (host: string) => {
      if (mode === 'plain') return { plain: true };
      const f = await hostCert(join(pki, 'ca'), host, join(pki, host));
      return { tls: { ca: f.ca, cert: f.cert, key: f.key } };
    };
    const linksAdmission = async (): Promise<AdmissionStatus> => {
      const s = await a.json<StatusView>(['status']);
      assert.ok(s.admission?.links, 'status --json has admission.links');
      return s.admission.links;
    };

    before(async () => {
      pki = await mkdtemp(join(tmpdir(), 'vmlink-adm-pki-'));
      if (mode === 'tls') await caInit(join(pki, 'ca'));
      port = await freeTcpPort();
      const ov = await overlay('a');
      a = await startDaemon({
        hostId: 'a',
        logLevel: 'debug',
        networks: [{ name: 'lab', vni: 100 }],
        extra: () => ({
          overlay: {
            ...ov,
            listen: `tcp:127.0.0.1:${port}`,
            max_connections: MAX,
            max_connections_per_source: PER_SOURCE,
            hello_timeout_ms: 9000,
          },
        }),
      });
    });

    after(async () => {
      for (const f of floods) f.destroy();
      await b?.cleanup();
      await a?.cleanup();
      await rm(pki, { recursive: true, force: true });
    });

    test('a peer daemon links up while the listener is kept full of connections without a hello', async () => {
      for (const src of SOURCES) {
        const f = await Flood.open({ host: '127.0.0.1', port, localAddress: src }, PER_SOURCE_FLOOD);
        floods.push(f);
        // Past its own cap, a source is closed at accept.
        await f.closedAtLeast(PER_SOURCE_FLOOD - PER_SOURCE);
      }
      // Every place taken; whatever the listener closes from now on (deadline, eviction) is opened again.
      for (const f of floods) f.renew(RENEWALS);
      const full = await linksAdmission();
      assert.ok(full.tcp <= MAX, `${full.tcp} inbound connections`);
      assert.ok(full.refused.per_source >= 1);

      const ovb = await overlay('b');
      b = await startDaemon({
        hostId: 'b',
        networks: [{ name: 'lab', vni: 100 }],
        extra: () => ({ overlay: ovb, links: [{ name: 'a', connect: `tcp:127.0.0.1:${port}` }] }),
      });
      const peer = b;
      await untilAsync('link to a up', async () => {
        const links = (await peer.json<{ links: LinkView[] }>(['link', 'list'])).links;
        return links.find((l) => l.name === 'a')?.state === 'up';
      });
      const onA = (await a.json<{ links: LinkView[] }>(['link', 'list'])).links;
      assert.equal(onA.find((l) => l.peer === 'b')?.state, 'up');
      // b's connection took the place of a pending one (and the flood's answer took another's).
      assert.ok((await linksAdmission()).refused.evicted >= 1);
    });

    test('once the flood stops, its connections are closed, all counted; the link stays up', async () => {
      for (const f of floods) f.stopRenewing();
      await Promise.all(floods.map((f) => f.allClosed()));
      const flooded = floods.reduce((n, f) => n + f.connected, 0);
      const s = await linksAdmission();
      const r = s.refused;
      assert.equal(r.per_source + r.evicted + r.handshake_timeout + r.listener_full, flooded);
      assert.ok(r.handshake_timeout >= 1);
      assert.equal(s.tcp, 1, 'only the link from b is left');
      assert.equal(s.pending, 0);
      const links = (await (b as TestDaemon).json<{ links: LinkView[] }>(['link', 'list'])).links;
      assert.equal(links.find((l) => l.name === 'a')?.state, 'up');
      assert.doesNotMatch(a.log, /link connection from \S+ not established|refused link peer/);
    });

    test('connections that hang up before a hello are logged at debug level only', async () => {
      const hungUp = () => a.log.split('\n').filter((l) => l.includes('hung up before its hello'));
      const before = hungUp().length;
      const quitters = await Flood.open({ host: '127.0.0.1', port, localAddress: '127.0.0.7' }, 20);
      floods.push(quitters);
      quitters.destroy();
      // Seen once one is logged and all have left their places (a hang-up in TLS may end before Node reports it).
      await until('hang-ups logged', () => hungUp().length > before, 30_000);
      await untilAsync('hang-ups gone', async () => (await linksAdmission()).tcp === 1);
      for (const l of hungUp()) assert.equal((JSON.parse(l) as { level: number }).level, 20, l);
      assert.doesNotMatch(a.log, /link connection from \S+ not established|refused link peer/);
    });
  });
}

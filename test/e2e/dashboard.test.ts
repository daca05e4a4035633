/**
 * The web dashboard in a real browser (Debian's chromium driven by
 * playwright-core). Two daemons in a cluster (a real etcd on loopback), each
 * with a TAP port whose far end sits in a network namespace: one daemon's
 * dashboard shows the whole fabric, both hosts, the link between them and
 * both hosts' ports; a ping flood between the namespaces makes the ports'
 * rates rise on screen; a port deleted through the CLI on the other host
 * disappears. With 1,000 ports the table pages and search finds one.
 * Screenshots go to test-artifacts/ (one of them is docs/images/dashboard.png).
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { type EtcdCluster, startEtcd } from '../helpers/etcd.js';
import { freeTcpPort } from '../helpers/host-net.js';
import { Netns, uniqueIfname } from '../helpers/netns.js';
import { REPO_ROOT } from '../helpers/vm.js';

const ARTIFACTS = join(REPO_ROOT, 'test-artifacts');
/** Generous: the machine is shared; nothing here measures time. */
const WAIT = 90_000;

/** The dashboard's address: the daemon's http.listen as `GET /v1/status` reports it. */
async function dashboardUrl(d: TestDaemon): Promise<string> {
  const st = await d.json<{ http?: { listen: string[] } }>(['status']);
  const at = st.http?.listen[0];
  assert.ok(at, `the daemon has an HTTP endpoint: ${JSON.stringify(st.http)}`);
  return `http://${at.slice('tcp:'.length)}/`;
}

async function until<T>(what: string, fn: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + WAIT;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * Stops a ping flood: SIGKILL (a flood blocked in a full send queue does not act on SIGINT), and
 * waits for it, its output pipes closed, so nothing keeps the test process alive.
 */
async function stopFlood(p: ChildProcess | undefined): Promise<void> {
  if (!p) return;
  p.stdout?.destroy();
  p.stderr?.destroy();
  if (p.exitCode === null && p.signalCode === null) {
    const exited = new Promise((resolve) => p.once('exit', resolve));
    p.kill('SIGKILL');
    await exited;
  }
}

async function ok(d: TestDaemon, args: string[]): Promise<string> {
  const r = await d.cli(args, 60_000);
  assert.equal(r.code, 0, `vmlink ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function openPage(browser: Browser, url: string): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  after(() => assert.deepEqual(errors, [], 'no script errors on the page'));
  await page.goto(url);
  await page.locator('[data-testid=live]', { hasText: 'live' }).waitFor({ timeout: WAIT });
  return page;
}

const rxBps = (page: Page, key: string): Promise<number> =>
  page
    .locator(`tr[data-port="${key}"] td[data-testid=rx]`)
    .getAttribute('data-bps', { timeout: WAIT })
    .then((v) => Number(v));

describe('the web dashboard of a two-host fabric', { timeout: 600_000 }, () => {
  const ifA = uniqueIfname('vda');
  const ifB = uniqueIfname('vdb');
  let etcd: EtcdCluster;
  let a: TestDaemon;
  let b: TestDaemon;
  let ns1: Netns;
  let ns2: Netns;
  let browser: Browser;
  let pageA: Page;
  let flood: ChildProcess | undefined;

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    etcd = await startEtcd();
    const extra = (port: number) => () => ({
      overlay: { listen: `tcp:127.0.0.1:${port}`, plain: true },
      http: { listen: 'tcp:127.0.0.1:0' },
    });
    a = await startDaemon({ hostId: 'dash-a', logLevel: 'warn', extra: extra(await freeTcpPort()) });
    b = await startDaemon({ hostId: 'dash-b', logLevel: 'warn', extra: extra(await freeTcpPort()) });
    await ok(a, ['network', 'create', 'lab', '--vni', '100']);
    await ok(a, ['network', 'create', 'dmz', '--vni', '200']);
    const joinAt = `tcp:127.0.0.1:${await freeTcpPort()}`;
    await ok(a, ['cluster', 'init', '--etcd', etcd.endpoints.join(','), '--join-listen', joinAt]);
    const token = (await ok(a, ['cluster', 'token'])).trim();
    await ok(b, ['cluster', 'join', token]);
    await until('network dmz on dash-b', async () => {
      const { networks } = await b.json<{ networks: { name: string }[] }>(['network', 'list']);
      return networks.find((n) => n.name === 'dmz');
    });
    const add = (d: TestDaemon, name: string, net: string, how: string[]) =>
      ok(d, ['port', 'add', name, '--network', net, ...how]);
    await add(a, 'vm-a', 'lab', ['--kind', 'tap', '--ifname', ifA]);
    await add(a, 'db-a', 'dmz', ['--kind', 'stream', '--listen', `unix:${a.path('db-a.sock')}`]);
    await add(b, 'vm-b', 'lab', ['--kind', 'tap', '--ifname', ifB]);
    await add(b, 'web-b', 'dmz', ['--kind', 'stream', '--listen', `unix:${b.path('web-b.sock')}`]);
    await ok(a, ['qos', 'request', 'vm-a', '--min', '2mbit', '--max', '50mbit']);
    await ok(b, ['export', 'add', 'disk-b', '--backend', 'memory', '--size', '64M']);
    ns1 = await Netns.create('dash1');
    ns2 = await Netns.create('dash2');
    await ns1.adopt(ifA, '10.77.0.1/24');
    await ns2.adopt(ifB, '10.77.0.2/24');
    await until('a ping across the fabric', () => ns1.exec('ping', '-c', '1', '-W', '2', '10.77.0.2'));
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
    pageA = await openPage(browser, await dashboardUrl(a));
  });

  after(async () => {
    await stopFlood(flood);
    await browser?.close();
    await a?.cleanup();
    await b?.cleanup();
    await ns1?.delete();
    await ns2?.delete();
    await etcd?.stop();
  });

  test("the topology shows both hosts, the link and both hosts' ports; QoS use and exports are listed", async () => {
    const topo = pageA.locator('[data-testid=topology]');
    await topo.locator('[data-host="dash-a"]').waitFor({ timeout: WAIT });
    await topo.locator('[data-host="dash-b"]').waitFor({ timeout: WAIT });
    const link = topo.locator('[data-link="dash-a|dash-b"]');
    await link.waitFor({ timeout: WAIT });
    await until(
      'the link up on screen',
      async () => ((await link.textContent()) ?? '').match(/direct|relay/) ?? undefined,
    );
    for (const port of ['dash-a/vm-a', 'dash-a/db-a', 'dash-b/vm-b', 'dash-b/web-b']) {
      await topo.locator(`[data-port="${port}"]`).waitFor({ timeout: WAIT });
      await pageA.locator(`tr[data-port="${port}"]`).waitFor({ timeout: WAIT });
    }
    await pageA.locator('tr[data-port="dash-a/vm-a"] .qos').waitFor({ timeout: WAIT });
    await pageA.locator('tr[data-export="dash-b/disk-b"]').waitFor({ timeout: WAIT });
    await pageA.locator('tr[data-link^="dash-a/"]').first().waitFor({ timeout: WAIT });
    await pageA.locator('tr[data-link^="dash-b/"]').first().waitFor({ timeout: WAIT });
    // The other daemon's dashboard shows the same fabric.
    const pageB = await openPage(browser, await dashboardUrl(b));
    await pageB.locator('[data-testid=topology] [data-port="dash-a/vm-a"]').waitFor({ timeout: WAIT });
    await pageB.locator('[data-testid=topology] [data-port="dash-b/vm-b"]').waitFor({ timeout: WAIT });
    await pageA.screenshot({ path: join(ARTIFACTS, 'dashboard-topology.png'), fullPage: true });
    await pageB.screenshot({ path: join(ARTIFACTS, 'dashboard-peer.png'), fullPage: true });
    await pageB.close();
  });

  test("a ping flood between the namespaces makes the ports' rates rise on screen", async () => {
    const beforeA = await rxBps(pageA, 'dash-a/vm-a');
    const beforeB = await rxBps(pageA, 'dash-b/vm-b');
    flood = ns1.spawn('ping', '-f', '-s', '1000', '-w', '300', '10.77.0.2');
    // About 8 kbit per echo: a flood shows hundreds of kbit/s; a quiet TAP a few bits.
    const rose = (before: number) => (v: number) => (v > Math.max(100_000, before * 10) ? v : undefined);
    const duringA = await until('the flood on screen, local port', async () =>
      rose(beforeA)(await rxBps(pageA, 'dash-a/vm-a')),
    );
    const duringB = await until("the flood on screen, the other host's port", async () =>
      rose(beforeB)(await rxBps(pageA, 'dash-b/vm-b')),
    );
    await pageA.locator('tr[data-port="dash-a/vm-a"]').click();
    await pageA.locator('[data-testid=port-detail][data-port="dash-a/vm-a"]').waitFor({ timeout: WAIT });
    await until('a few seconds of rate history', async () =>
      (await pageA.locator('[data-testid=port-detail] svg.spark').count()) > 0 ? true : undefined,
    );
    await pageA.screenshot({ path: join(ARTIFACTS, 'dashboard-flood.png'), fullPage: true });
    await stopFlood(flood);
    assert.ok(duringA > beforeA, `rx rate of dash-a/vm-a rose from ${beforeA} to ${duringA} bit/s on screen`);
    assert.ok(duringB > beforeB, `rx rate of dash-b/vm-b rose from ${beforeB} to ${duringB} bit/s on screen`);
  });

  test('a port deleted through the CLI on the other host disappears', async () => {
    await ok(b, [
      'port',
      'add',
      'tmp-b',
      '--kind',
      'stream',
      '--network',
      'lab',
      '--listen',
      `unix:${b.path('t.sock')}`,
    ]);
    const row = pageA.locator('tr[data-port="dash-b/tmp-b"]');
    const node = pageA.locator('[data-testid=topology] [data-port="dash-b/tmp-b"]');
    await row.waitFor({ timeout: WAIT });
    await node.waitFor({ timeout: WAIT });
    await ok(b, ['port', 'delete', 'tmp-b']);
    await row.waitFor({ state: 'detached', timeout: WAIT });
    await node.waitFor({ state: 'detached', timeout: WAIT });
    await pageA.locator('tr[data-port="dash-b/vm-b"]').waitFor({ timeout: WAIT });
  });
});

describe('the web dashboard with 1,000 ports', { timeout: 600_000 }, () => {
  let d: TestDaemon;
  let browser: Browser;

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    d = await startDaemon({
      hostId: 'dash-many',
      logLevel: 'warn',
      networks: [
        { name: 'lab', vni: 100, mtu: 1500 },
        { name: 'dmz', vni: 200, mtu: 1500 },
      ],
      ports: (dir) =>
        Array.from({ length: 1000 }, (_, i) => {
          const name = `p${String(i).padStart(4, '0')}`;
          return { name, network: i % 2 ? 'dmz' : 'lab', kind: 'stream', listen: `unix:${join(dir, `${name}.sock`)}` };
        }),
      extra: () => ({ http: { listen: 'tcp:127.0.0.1:0' } }),
    });
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
  });

  after(async () => {
    await browser?.close();
    await d?.cleanup();
  });

  test('pages the port table, aggregates the topology and finds one port by search', async () => {
    const page = await openPage(browser, await dashboardUrl(d));
    const count = page.locator('[data-testid=port-count]');
    await count.filter({ hasText: /^1000 ports$/ }).waitFor({ timeout: WAIT });
    assert.equal(await page.locator('[data-testid=port-table] tbody tr').count(), 50, 'one page of 50 rows');
    assert.match((await page.locator('[data-testid=port-page]').textContent()) ?? '', /page 1 of 20/);
    // The topology draws a few ports per network and counts the rest.
    const drawn = await page.locator('[data-testid=topology] [data-port]').count();
    assert.ok(drawn > 0 && drawn <= 20, `${drawn} port nodes drawn`);
    assert.match((await page.locator('[data-testid=topology]').textContent()) ?? '', /lab \(vni 100\): 500 ports/);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-1000-ports.png'), fullPage: false });

    await page.locator('[data-testid=port-search]').fill('p0777');
    await count.filter({ hasText: /^1 of 1000 ports$/ }).waitFor({ timeout: WAIT });
    await page.locator('tr[data-port="dash-many/p0777"]').waitFor({ timeout: WAIT });
    assert.equal(await page.locator('[data-testid=port-table] tbody tr').count(), 1);
    // Still live: the next polls are drawn with the filter kept.
    const shown = await page.locator('.where').textContent();
    await page
      .locator('.where')
      .filter({ hasNotText: shown ?? '' })
      .waitFor({ timeout: WAIT });
    assert.equal(await page.locator('[data-testid=port-table] tbody tr').count(), 1);
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-1000-search.png'), fullPage: false });

    await page.locator('[data-testid=port-search]').fill('dmz');
    await count.filter({ hasText: /^500 of 1000 ports$/ }).waitFor({ timeout: WAIT });
    await page.locator('button', { hasText: 'next' }).click();
    await page.locator('[data-testid=port-page]', { hasText: 'page 2 of 10' }).waitFor({ timeout: WAIT });
    await page.close();
  });

  test('says it is not updating when the daemon goes away, and keeps the last numbers', async () => {
    const page = await openPage(browser, await dashboardUrl(d));
    await page.locator('[data-testid=port-count]', { hasText: /^1000 ports$/ }).waitFor({ timeout: WAIT });
    await d.stop();
    await page.locator('[data-testid=live]', { hasText: 'not updating' }).waitFor({ timeout: WAIT });
    assert.equal(await page.locator('[data-testid=port-count]').textContent(), '1000 ports');
    assert.equal(await page.locator('[data-testid=port-table] tbody tr').count(), 50);
    await page.close();
  });
});

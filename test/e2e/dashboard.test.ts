/**
 * The web dashboard in a real browser (Debian's chromium driven by
 * playwright-core): two daemons joined by a link, each with a TAP port whose
 * far end sits in a network namespace. The topology shows both hosts, the link
 * and the ports; a ping flood between the namespaces makes the port's rate
 * rise on screen; a port deleted through the CLI disappears; with 1,000 ports
 * the table pages and search finds one. Screenshots go to test-artifacts/.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { Netns, uniqueIfname } from '../helpers/netns.js';
import { REPO_ROOT } from '../helpers/vm.js';

const ARTIFACTS = join(REPO_ROOT, 'test-artifacts');
/** Generous: the machine is shared; nothing here measures time. */
const WAIT = 90_000;

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

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
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
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

describe('the web dashboard', { timeout: 600_000 }, () => {
  const ifA = uniqueIfname('vda');
  const ifB = uniqueIfname('vdb');
  let a: TestDaemon;
  let b: TestDaemon;
  let ns1: Netns;
  let ns2: Netns;
  let browser: Browser;
  let pageA: Page;
  let flood: ChildProcess | undefined;

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    const linkPort = await freePort();
    const http = { listen: 'tcp:127.0.0.1:0' };
    const networks = [
      { name: 'lab', vni: 100, mtu: 1500 },
      { name: 'dmz', vni: 200, mtu: 1500 },
    ];
    b = await startDaemon({
      hostId: 'dash-b',
      logLevel: 'warn',
      networks,
      ports: (dir) => [
        { name: 'vm-b', network: 'lab', kind: 'tap', ifname: ifB },
        { name: 'web-b', network: 'dmz', kind: 'stream', listen: `unix:${join(dir, 'web-b.sock')}` },
      ],
      extra: () => ({ overlay: { listen: `tcp:127.0.0.1:${linkPort}`, plain: true }, http }),
    });
    a = await startDaemon({
      hostId: 'dash-a',
      logLevel: 'warn',
      networks,
      ports: (dir) => [
        { name: 'vm-a', network: 'lab', kind: 'tap', ifname: ifA },
        { name: 'db-a', network: 'dmz', kind: 'stream', listen: `unix:${join(dir, 'db-a.sock')}` },
      ],
      extra: () => ({
        overlay: { plain: true },
        links: [{ name: 'dash-b', connect: `tcp:127.0.0.1:${linkPort}` }],
        http,
      }),
    });
    ns1 = await Netns.create('dash1');
    ns2 = await Netns.create('dash2');
    await ns1.adopt(ifA, '10.77.0.1/24');
    await ns2.adopt(ifB, '10.77.0.2/24');
    await until('the link up', async () => {
      const { links } = await a.json<{ links: { name: string; state: string }[] }>(['link', 'list']);
      return links.find((l) => l.name === 'dash-b' && l.state === 'up');
    });
    await ns1.exec('ping', '-c', '3', '-W', '5', '10.77.0.2');
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'] });
    pageA = await openPage(browser, await dashboardUrl(a));
  });

  after(async () => {
    flood?.kill('SIGKILL');
    await browser?.close();
    await a?.cleanup();
    await b?.cleanup();
    await ns1?.delete();
    await ns2?.delete();
  });

  test('the topology shows both hosts, the link and the ports', async () => {
    const topo = pageA.locator('[data-testid=topology]');
    await topo.locator('[data-host="dash-a"]').waitFor({ timeout: WAIT });
    await topo.locator('[data-host="dash-b"]').waitFor({ timeout: WAIT });
    const link = topo.locator('[data-link="dash-a|dash-b"]');
    await link.waitFor({ timeout: WAIT });
    assert.match((await link.textContent()) ?? '', /direct/);
    await topo.locator('[data-port="dash-a/vm-a"]').waitFor({ timeout: WAIT });
    await topo.locator('[data-port="dash-a/db-a"]').waitFor({ timeout: WAIT });
    await pageA.locator('tr[data-link="dash-a/dash-b"]').waitFor({ timeout: WAIT });
    // The other host's own dashboard shows its ports (without a cluster each daemon knows its own).
    const pageB = await openPage(browser, await dashboardUrl(b));
    await pageB.locator('[data-testid=topology] [data-port="dash-b/vm-b"]').waitFor({ timeout: WAIT });
    await pageB.locator('[data-testid=topology] [data-host="dash-a"]').waitFor({ timeout: WAIT });
    await pageA.screenshot({ path: join(ARTIFACTS, 'dashboard-topology.png'), fullPage: true });
    await pageB.screenshot({ path: join(ARTIFACTS, 'dashboard-peer.png'), fullPage: true });
    await pageB.close();
  });

  test('a ping flood between the namespaces makes the port rate rise on screen', async () => {
    const before = await rxBps(pageA, 'dash-a/vm-a');
    flood = ns1.spawn('ping', '-f', '-s', '1000', '-w', '300', '10.77.0.2');
    // About 8 kbit per echo request: a flood shows hundreds of kbit/s; a quiet TAP a few bits.
    const during = await until('the flood on screen', async () => {
      const v = await rxBps(pageA, 'dash-a/vm-a');
      return v > Math.max(100_000, before * 10) ? v : undefined;
    });
    await pageA.locator('tr[data-port="dash-a/vm-a"]').click();
    await pageA.locator('[data-testid=port-detail][data-port="dash-a/vm-a"]').waitFor({ timeout: WAIT });
    await pageA.screenshot({ path: join(ARTIFACTS, 'dashboard-flood.png'), fullPage: true });
    flood.kill('SIGINT');
    flood = undefined;
    assert.ok(during > before, `rx rate of vm-a rose from ${before} to ${during} bit/s on screen`);
  });

  test('a port deleted through the CLI disappears', async () => {
    const sock = a.path('tmp-a.sock');
    const added = await a.cli([
      'port',
      'add',
      'tmp-a',
      '--kind',
      'stream',
      '--network',
      'lab',
      '--listen',
      `unix:${sock}`,
    ]);
    assert.equal(added.code, 0, added.stderr);
    const row = pageA.locator('tr[data-port="dash-a/tmp-a"]');
    const node = pageA.locator('[data-testid=topology] [data-port="dash-a/tmp-a"]');
    await row.waitFor({ timeout: WAIT });
    await node.waitFor({ timeout: WAIT });
    const deleted = await a.cli(['port', 'delete', 'tmp-a']);
    assert.equal(deleted.code, 0, deleted.stderr);
    await row.waitFor({ state: 'detached', timeout: WAIT });
    await node.waitFor({ state: 'detached', timeout: WAIT });
    await pageA.locator('tr[data-port="dash-a/vm-a"]').waitFor({ timeout: WAIT });
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
});

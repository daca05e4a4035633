/**
 * The capabilities of packaging/vmlink.service are the ones the daemon needs,
 * each for what the unit says: the daemon runs with exactly the unit's
 * CapabilityBoundingSet= (setpriv: bounding set, no inheritable caps,
 * no_new_privs, as systemd applies them to a root service) in a network
 * namespace of its own, with a TAP port, a host port (AF_PACKET on a veth
 * interface) and a unix socket port handed to another group. With the whole
 * set every port comes up; without CAP_NET_ADMIN the TAP port cannot open,
 * without CAP_NET_RAW the host port, without CAP_CHOWN the socket port. The
 * daemon reports READY=1 either way, naming the port that is down in STATUS.
 *
 * Needs root (namespaces, TAP): run with flock /tmp/vmlink-e2e.lock.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { statSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BIN } from '../helpers/cli-daemon.js';
import { NotifySocket } from '../helpers/notify-socket.js';
import { REPO_ROOT } from '../helpers/vm.js';

/** A group root is not a member of: handing a socket to it needs CAP_CHOWN. */
const OTHER_GID = 65534;
const isRoot = process.getuid?.() === 0;

/** The unit's bounding set, e.g. ['net_admin', 'net_raw', 'chown']. */
async function unitCaps(): Promise<string[]> {
  const unit = await readFile(join(REPO_ROOT, 'packaging', 'vmlink.service'), 'utf8');
  const line = /^CapabilityBoundingSet=(.*)$/m.exec(unit)?.[1] ?? '';
  return line
    .split(/\s+/)
    .filter(Boolean)
    .map((c) => c.replace(/^CAP_/, '').toLowerCase());
}

/** Runs the daemon with `caps` in a new network namespace; resolves with the STATUS of its READY=1 and the socket's gid. */
async function runWith(dir: string, caps: readonly string[]): Promise<{ status: string; gid: number }> {
  const sock = join(dir, `s-${caps.join('-')}.sock`);
  const config = join(dir, `${caps.join('-') || 'none'}.yaml`);
  await writeFile(
    config,
    [
      `host: { id: caps, control: ${join(dir, `ctl-${caps.join('-')}.sock`)}, state_dir: ${join(dir, `state-${caps.join('-')}`)} }`,
      'networks: [{ name: lab, vni: 100 }]',
      'ports:',
      '  - { name: tap, network: lab, kind: tap, ifname: vmsd0 }',
      '  - { name: host, network: lab, kind: host, ifname: d0 }',
      `  - { name: sock, network: lab, kind: stream, listen: "unix:${sock}", socket: { mode: "0660", group: ${OTHER_GID} } }`,
      '',
    ].join('\n'),
  );
  const notify = await NotifySocket.open();
  const bounding = ['-all', ...caps.map((c) => `+${c}`)].join(',');
  const script =
    'ip link add d0 type veth peer name d1 && ip link set d0 up && ip link set d1 up && exec setpriv --bounding-set="$CAPS" --inh-caps=-all ' +
    '--no-new-privs -- "$NODE" "$BIN" daemon --config "$CONFIG" --log-level warn';
  const child = spawn('unshare', ['--net', 'sh', '-c', script], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, NOTIFY_SOCKET: notify.path, CAPS: bounding, NODE: process.execPath, BIN, CONFIG: config },
  });
  let err = '';
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    err += s;
  });
  try {
    const ready = await Promise.race([
      notify.next('READY', { value: '1' }),
      once(child, 'exit').then(([code]) => {
        throw new Error(`the daemon exited (${code}) before READY=1:\n${err}`);
      }),
    ]);
    let gid = -1;
    try {
      gid = statSync(sock).gid;
    } catch {
      // no socket: the port is down
    }
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    assert.equal((await exited)[0], 0, err);
    return { status: ready.fields.get('STATUS') ?? '', gid };
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await notify.close();
  }
}

describe('the unit’s capabilities', { skip: !isRoot && 'needs root', timeout: 180_000 }, () => {
  let dir: string;
  let caps: string[];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-caps-'));
    caps = await unitCaps();
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('are CAP_NET_ADMIN, CAP_NET_RAW and CAP_CHOWN, nothing more', () => {
    assert.deepEqual([...caps].sort(), ['chown', 'net_admin', 'net_raw']);
  });

  test('are enough for a TAP port, a host port and a socket handed to another group', async () => {
    const r = await runWith(dir, caps);
    assert.match(r.status, /; 3 ports: (?=.*2 up)(?=.*1 listening)/);
    assert.doesNotMatch(r.status, /down/);
    assert.equal(r.gid, OTHER_GID);
  });

  for (const [cap, port] of [
    ['net_admin', 'tap'],
    ['net_raw', 'host'],
    ['chown', 'sock'],
  ] as const) {
    test(`without CAP_${cap.toUpperCase()} the ${port} port cannot open, and the daemon says so`, async () => {
      const r = await runWith(
        dir,
        caps.filter((c) => c !== cap),
      );
      assert.match(r.status, new RegExp(`1 down[^(]*\\(${port}: cannot open: `), r.status);
    });
  }
});

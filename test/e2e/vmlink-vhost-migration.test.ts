/**
 * Live migration of a guest on a vhost-user port to a second QEMU on another
 * vhost-user port of the same daemon: during migration QEMU logs dirty pages
 * through the back-end's shared log (LOG_SHMFD, VHOST_F_LOG_ALL), and after
 * it the destination sends SEND_RARP, so the switch moves the guest's MAC to
 * the new port before the guest says anything. A peer VM keeps reaching it.
 */
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startDaemon, type TestDaemon } from '../helpers/daemon.js';
import { attachVms, diagnoseOnFailure } from '../helpers/e2e.js';
import { pingUntilReply } from '../helpers/guest-net.js';
import { bootVm, type Vm } from '../helpers/vm.js';

const MEM_MB = 160;

/** Sends HMP commands to a QEMU monitor socket and returns everything it printed. */
async function hmp(path: string, cmd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let out = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`monitor ${path}: no answer to "${cmd}"`));
    }, 10_000);
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      out += d;
      // The banner prompt, then our command's output and the next prompt.
      if ((out.match(/\(qemu\) /g) ?? []).length >= 2) {
        clearTimeout(timer);
        s.end();
        resolve(out);
      }
    });
    s.on('error', reject);
    s.once('connect', () => s.write(`${cmd}\n`));
  });
}

describe('live migration of a vhost-user guest', { timeout: 600_000 }, () => {
  let daemon: TestDaemon | undefined;
  let vms: Vm[] = [];
  let dest: Vm | undefined;
  const diagnose = <T>(fn: () => Promise<T>) =>
    diagnoseOnFailure(
      () => [...vms, dest],
      () => daemon,
      fn,
    );

  before(async () => {
    daemon = await startDaemon({
      networks: [{ name: 'lab', vni: 100 }],
      ports: (dir) => [
        { name: 'src', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/src.sock`, memory_mb: MEM_MB },
        { name: 'dst', network: 'lab', kind: 'vhost-user', listen: `unix:${dir}/dst.sock`, memory_mb: MEM_MB },
        { name: 'peer', network: 'lab', kind: 'stream', listen: `unix:${dir}/peer.sock` },
      ],
    });
    vms = await diagnose(() => attachVms(daemon!, [{ port: 'peer', ip: '10.0.8.2/24', memMb: MEM_MB }]));
    const src = await daemon.qemuArgs('src');
    const mover = await bootVm({
      name: 'mover',
      ip: '10.0.8.1/24',
      memMb: MEM_MB,
      netArgs: [...src.args, '-monitor', `unix:${daemon.path('mon.sock')},server=on,wait=off`],
    });
    vms.push(mover);
    await diagnose(() => mover.waitReady());
  });

  after(async () => {
    await Promise.all([...vms, dest].map((v) => v?.close()));
    await daemon?.cleanup();
  });

  test('the guest moves to the destination port, the switch learns it there at once, and the peer reaches it', async () => {
    await diagnose(async () => {
      const [peer, mover] = vms as [Vm, Vm];
      assert.equal((await pingUntilReply(peer, mover, 10)).code, 0);
      // The destination: the same machine on port dst, with the source's ids (--id src) and MAC.
      const src = await daemon!.qemuArgs('src');
      const dst = await daemon!.json<{ args: string[] }>(['qemu-args', 'dst', '--id', 'src']);
      const mig = daemon!.path('mig.sock');
      dest = await bootVm({
        name: 'mover-dst',
        ip: '10.0.8.1/24',
        memMb: MEM_MB,
        netArgs: [
          ...dst.args.map((a) => (a.startsWith('virtio-net-pci,') ? a.replace(/mac=[^,]+/, `mac=${src.mac}`) : a)),
          ...['-incoming', `unix:${mig}`],
        ],
      });
      const dstUp = async () => {
        for (let i = 0; i < 100; i++) {
          const { port } = await daemon!.json<{ port: { state: string } }>(['port', 'show', 'dst']);
          if (port.state === 'up') return;
          await new Promise((r) => setTimeout(r, 100));
        }
        throw new Error('the destination QEMU never attached to port dst');
      };
      await dstUp();
      const mon = daemon!.path('mon.sock');
      await hmp(mon, `migrate -d unix:${mig}`);
      let status = '';
      for (let i = 0; i < 600 && !/Migration status: (completed|failed|cancelled)/.test(status); i++) {
        await new Promise((r) => setTimeout(r, 500));
        status = await hmp(mon, 'info migrate');
      }
      assert.match(status, /Migration status: completed/, status);
      // SEND_RARP from the destination moved the MAC to port dst before the guest sent anything itself.
      const macOnDst = async () => {
        for (let i = 0; i < 50; i++) {
          const { entries } = await daemon!.json<{ entries: { port: string; mac: string }[] }>(['fdb', 'show']);
          const e = entries.find((x) => x.mac.toLowerCase() === src.mac.toLowerCase());
          if (e?.port === 'dst') return;
          await new Promise((r) => setTimeout(r, 100));
        }
        throw new Error(`MAC ${src.mac} was not learned on port dst`);
      };
      await macOnDst();
      // The source QEMU logged dirty pages through port src while it migrated.
      const { port: srcPort } = await daemon!.json<{ port: unknown }>(['port', 'show', 'src']);
      assert.match(JSON.stringify(srcPort), /"dirty_logs":[1-9]/);
      // The guest runs on in the destination QEMU, and the peer reaches it there.
      vms[1] = dest;
      await mover.close();
      const r = await pingUntilReply(peer, dest, 10);
      assert.equal(r.code, 0, r.output);
      const back = await dest.run('ping -c 1 -W 2 10.0.8.2', { timeoutMs: 30_000 });
      assert.equal(back.code, 0, back.output);
    });
  });
});

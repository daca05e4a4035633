/**
 * `vmlink capture` against the real daemon (test/helpers/cli-daemon.ts):
 * pcap files and stdout that tshark reads, stopping on signals, unknown ports.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, watch } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BIN, broadcastFrame, cliOf, StreamPeer, suiteDaemon, tsharkSources } from '../helpers/cli-daemon.js';

describe('vmlink command line against a running daemon', { timeout: 120_000 }, () => {
  const d = suiteDaemon();
  const cli = cliOf(d);

  describe('capture', () => {
    const [pa, pb] = [() => join(d.dir, 'ca.sock'), () => join(d.dir, 'cb.sock')];
    let a: StreamPeer;
    let b: StreamPeer;
    let timer: NodeJS.Timeout | undefined;

    before(async () => {
      assert.equal((await cli('network', 'create', 'capnet', '--vni', '500')).code, 0);
      for (const [n, p] of [
        ['ca', pa()],
        ['cb', pb()],
      ] as const) {
        const r = await cli('port', 'add', n, '--kind', 'stream', '--network', 'capnet', '--listen', `unix:${p}`);
        assert.equal(r.code, 0, r.stderr);
      }
      a = await StreamPeer.connect(pa());
      b = await StreamPeer.connect(pb());
      await a.sendUntilReceived(broadcastFrame('525400cc0001'), b);
      await b.sendUntilReceived(broadcastFrame('525400cc0002'), a);
      // Traffic in both directions of port cb for as long as the captures run.
      let n = 0;
      timer = setInterval(() => {
        if (n++ % 2) a.send(broadcastFrame('525400cc0001'));
        else b.send(broadcastFrame('525400cc0002'));
      }, 10);
    });

    after(async () => {
      clearInterval(timer);
      a?.close();
      b?.close();
      await cli('port', 'delete', 'ca');
      await cli('port', 'delete', 'cb');
      await cli('network', 'delete', 'capnet');
    });

    test('capture -c N writes a pcap of N frames of both directions that tshark reads', async () => {
      const file = join(d.dir, 'six.pcap');
      const r = await cli('capture', 'cb', '-w', file, '-c', '6');
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /6 frames/);
      const macs = await tsharkSources(file);
      assert.equal(macs.length, 6);
      assert.ok(macs.includes('52:54:00:cc:00:01'), `rx side missing: ${macs}`);
      assert.ok(macs.includes('52:54:00:cc:00:02'), `tx side missing: ${macs}`);
    });

    test('capture -w - streams the pcap to stdout', async () => {
      const r = await new Promise<Buffer>((resolve, reject) => {
        execFile(
          process.execPath,
          [BIN, '--control', d.control, 'capture', 'ca', '-w', '-', '-c', '3'],
          { encoding: 'buffer', timeout: 30_000 },
          (err, stdout) => (err ? reject(err) : resolve(stdout)),
        );
      });
      assert.equal(r.readUInt32LE(0), 0xa1b2c3d4, 'pcap magic');
      const file = join(d.dir, 'stdout.pcap');
      await writeFile(file, r);
      assert.equal((await tsharkSources(file)).length, 3);
    });

    test('capture stops on SIGINT and SIGTERM and leaves a valid pcap', async () => {
      for (const sig of ['SIGINT', 'SIGTERM'] as const) {
        const file = join(d.dir, `${sig}.pcap`);
        const child = spawn(process.execPath, [BIN, '--control', d.control, 'capture', 'cb', '-w', file], {
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let stderr = '';
        child.stderr?.setEncoding('utf8').on('data', (s: string) => {
          stderr += s;
        });
        const exited = once(child, 'exit');
        // Wait (by watching the directory) until some records were written.
        const w = watch(d.dir);
        try {
          for (;;) {
            const size = await stat(file).then(
              (s) => s.size,
              () => 0,
            );
            if (size > 24 + 16 * 3) break;
            await Promise.race([once(w, 'change'), exited]);
            assert.equal(child.exitCode, null, `capture exited early: ${stderr}`);
          }
        } finally {
          w.close();
        }
        child.kill(sig);
        const [code] = await exited;
        assert.equal(code, 0, stderr);
        const macs = await tsharkSources(file);
        assert.ok(macs.length >= 1, 'the pcap has whole records');
        assert.match(stderr, new RegExp(`${macs.length} frames`));
      }
    });

    test('capture of an unknown port fails with exit 1 and leaves no file', async () => {
      const file = join(d.dir, 'none.pcap');
      const r = await cli('capture', 'ghost', '-w', file);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /ghost/);
      assert.equal(existsSync(file), false);
    });
  });
});

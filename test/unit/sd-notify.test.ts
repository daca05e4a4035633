/**
 * daemon/sd-notify.ts: the address forms of NOTIFY_SOCKET, the message
 * format, what the notifier does without a manager, and delivery to a path
 * (the test's socket) and to an abstract name (socat holding it).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { notifyAddress, notifyMessage, sdNotifier } from '../../src/daemon/sd-notify.js';
import { silentLogger } from '../../src/log.js';
import { NotifySocket } from '../helpers/notify-socket.js';

const logger = silentLogger();

describe('sd_notify', () => {
  test('takes a path as it is and turns an @abstract name into a sockaddr_un with a leading NUL', () => {
    assert.equal(notifyAddress('/run/systemd/notify'), '/run/systemd/notify');
    const sa = notifyAddress('@vmlink/x') as Buffer;
    // sun_family AF_UNIX (1, host order), NUL, the name, no trailing NUL.
    assert.equal(sa.toString('hex'), `010000${Buffer.from('vmlink/x').toString('hex')}`);
  });

  test('refuses a relative path, a bare @, a name too long and vsock: addresses', () => {
    for (const bad of ['notify', '@', `/${'x'.repeat(120)}`, `@${'x'.repeat(120)}`, 'vsock:2:1234'])
      assert.throws(() => notifyAddress(bad), Error, bad);
  });

  test('writes one KEY=VALUE per line and keeps a newline in a value from starting another field', () => {
    assert.equal(notifyMessage({ READY: '1', STATUS: 'a\nSTOPPING=1' }), 'READY=1\nSTATUS=a STOPPING=1');
  });

  test('does nothing without NOTIFY_SOCKET, and takes the variables out of the environment', () => {
    const env: NodeJS.ProcessEnv = { WATCHDOG_USEC: '1000000' };
    const n = sdNotifier({ logger, env });
    assert.equal(n.enabled, false);
    assert.equal(n.watchdogMs, undefined);
    n.ready('ready');
    n.close();
    const env2: NodeJS.ProcessEnv = {
      NOTIFY_SOCKET: '/nonexistent/notify',
      WATCHDOG_USEC: '1000000',
      WATCHDOG_PID: '1',
    };
    const m = sdNotifier({ logger, env: env2 });
    assert.deepEqual(env2, {});
    assert.equal(m.enabled, true);
    // WATCHDOG_PID names another process: the watchdog is not this one's.
    assert.equal(m.watchdogMs, undefined);
    // A socket that is not there is logged once, never thrown.
    m.ready('ready');
    m.status('still');
    m.close();
  });

  test('keeps alive at half of WATCHDOG_USEC when WATCHDOG_PID is this process', () => {
    const env = { NOTIFY_SOCKET: '/nonexistent/notify', WATCHDOG_USEC: '3000000', WATCHDOG_PID: String(process.pid) };
    const n = sdNotifier({ logger, env });
    assert.equal(n.watchdogMs, 1500);
    n.close();
  });

  describe('delivery', () => {
    let sock: NotifySocket | undefined;
    after(() => sock?.close());

    test('sends READY, RELOADING with MONOTONIC_USEC, STATUS and STOPPING to a socket path', async () => {
      sock = await NotifySocket.open();
      const n = sdNotifier({ logger, env: { NOTIFY_SOCKET: sock.path } });
      n.status('starting');
      n.ready('up');
      n.reloading('reloading');
      n.stopping('bye');
      n.close();
      n.ready('after close: nothing');
      await sock.next('STOPPING');
      assert.deepEqual(
        sock.messages.map((m) => m.text.replace(/MONOTONIC_USEC=\d+/, 'MONOTONIC_USEC=N')),
        [
          'STATUS=starting',
          'READY=1\nSTATUS=up',
          'RELOADING=1\nMONOTONIC_USEC=N\nSTATUS=reloading',
          'STOPPING=1\nSTATUS=bye',
        ],
      );
    });

    test('sends to an abstract socket name (@...)', { skip: !existsSync('/usr/bin/socat') && 'no socat' }, async () => {
      const name = `vmlink-sd-${process.pid}-${Date.now()}`;
      const socat = spawn('socat', ['-u', `ABSTRACT-RECV:${name}`, 'STDOUT'], { stdio: ['ignore', 'pipe', 'pipe'] });
      try {
        let out = '';
        socat.stdout.setEncoding('utf8');
        const got = new Promise<void>((resolve) => {
          socat.stdout.on('data', (s: string) => {
            out += s;
            if (out.includes('READY=1')) resolve();
          });
        });
        const n = sdNotifier({ logger, env: { NOTIFY_SOCKET: `@${name}` } });
        // socat binds after it starts: send until it has the datagram (a send before the bind is refused and dropped).
        const timer = setInterval(() => n.ready('abstract'), 50);
        await got;
        clearInterval(timer);
        n.close();
        assert.match(out, /READY=1\nSTATUS=abstract/);
      } finally {
        socat.kill();
      }
    });
  });
});

/**
 * Traffic generator and sink for the vhost-user benchmark: each is a
 * vhost-user front-end (test/helpers/vhost-frontend.ts: memfd guest memory,
 * rings, eventfd kicks and calls) playing a guest driver that is as fast as
 * it can be: fixed transmit descriptors refilled in bulk, receive buffers
 * counted and posted again without copying, kicks and interrupts only when
 * the other side asked (EVENT_IDX). Receive buffers are those of a Linux
 * guest with VIRTIO_NET_F_MRG_RXBUF (virtio_net.c get_mergeable_buf_len):
 * header + the average frame clamped to 1518..4084 bytes, rounded up to a
 * 64-byte cache line, so a 64 KiB frame fills 17 buffers of 4 KiB.
 *
 *   node dist/bench/vhost-peers.js gen  SOCK FRAME_SIZE SECONDS DST_MAC SRC_MAC
 *   node dist/bench/vhost-peers.js sink SOCK FRAME_SIZE SECONDS MAC
 *
 * The sink counts over a window of SECONDS that opens at the first frame
 * and prints one JSON line: { frames, bytes, seconds }.
 *
 * VHOST_BENCH_HALT_POLL_US=N models KVM's halt-polling (the kvm module's
 * halt_poll_ns): the vCPU of a guest that goes idle is polled by the host
 * for a while before its thread sleeps, so an interrupt that comes soon
 * wakes it without a sleep and a wake-up. Here: after its ring ran dry a
 * front-end looks again for up to N µs before it waits for a call. 0 (the
 * default): it waits at once.
 */
import { writeMac } from '../src/net/frame/ethernet.js';
import { bit, F, NET_HDR_LEN } from '../src/net/vhost/constants.js';
import { DEFAULT_FEATURES, TestFrontend } from '../test/helpers/vhost-frontend.js';
import { parseMacOrThrow } from './util.js';

const [role, sock, sizeText, ...rest] = process.argv.slice(2);
const size = Number(sizeText);
const bufSize = Math.max(2048, (NET_HDR_LEN + size + 63) & ~63);
const rxBufSize = (NET_HDR_LEN + Math.min(Math.max(size, 1518), 4096 - NET_HDR_LEN) + 63) & ~63;
const features = DEFAULT_FEATURES + bit(F.NET_MRG_RXBUF);
const QUEUE = Number(process.env['VHOST_BENCH_QUEUE'] ?? 1024);
const HALT_POLL_MS = Number(process.env['VHOST_BENCH_HALT_POLL_US'] ?? 0) / 1000;

/**
 * Runs `work` until it has found nothing for HALT_POLL_MS (once when that is
 * 0), and at most 1 ms, so timers still run; returns the sum of its results.
 */
function haltPolled(work: () => number): number {
  let sum = work();
  if (HALT_POLL_MS <= 0) return sum;
  const start = performance.now();
  let idleFrom = start;
  for (;;) {
    const n = work();
    const now = performance.now();
    if (n > 0) {
      sum += n;
      idleFrom = now;
    } else if (now - idleFrom >= HALT_POLL_MS) return sum;
    if (now - start >= 1) return sum;
  }
}

function frame(dst: number, src: number): Buffer {
  const f = Buffer.alloc(size);
  writeMac(f, 0, dst);
  writeMac(f, 6, src);
  f.writeUInt16BE(0x88b5, 12);
  return f;
}

async function gen(): Promise<void> {
  const [secText, dstText, srcText] = rest;
  const f = new TestFrontend(sock as string, { queueSize: QUEUE, bufSize, rxBufSize });
  await f.setup({ features });
  f.fillTx(frame(parseMacOrThrow(dstText), parseMacOrThrow(srcText)));
  let made = 0;
  const pump = (): void => {
    made += haltPolled(() => f.pumpTx());
  };
  f.onCall(1, pump);
  const safety = setInterval(pump, 2);
  pump();
  setTimeout(() => {
    clearInterval(safety);
    process.stdout.write(`${JSON.stringify({ frames: made })}\n`);
    process.exit(0);
  }, Number(secText) * 1000);
}

async function sink(): Promise<void> {
  const [secText, macText] = rest;
  const seconds = Number(secText);
  const mac = parseMacOrThrow(macText);
  const f = new TestFrontend(sock as string, { queueSize: QUEUE, bufSize, rxBufSize });
  await f.setup({ features });
  f.sendFrame(frame(0xffff_ffff_ffff, mac).subarray(0, 60)); // the switch learns where we are
  let frames = 0;
  let bytes = 0;
  let start = 0;
  const take = (): number => {
    const r = f.drainRx();
    frames += r.frames;
    bytes += r.bytes;
    return r.frames;
  };
  const drain = (): void => {
    if (start !== 0) {
      haltPolled(take);
      return;
    }
    if (take() === 0) return;
    start = performance.now();
    setTimeout(() => {
      take();
      const secs = (performance.now() - start) / 1000;
      process.stdout.write(`${JSON.stringify({ frames, bytes, seconds: secs })}\n`);
      process.exit(0);
    }, seconds * 1000);
  };
  f.onCall(0, drain);
  setInterval(drain, 2);
  process.stdout.write('ready\n');
}

if (role === 'gen') await gen();
else if (role === 'sink') await sink();
else {
  process.stderr.write('usage: vhost-peers.js gen|sink SOCK FRAME_SIZE ...\n');
  process.exit(2);
}

/**
 * Traffic generator and sink for the stream-port benchmark, speaking QEMU's
 * stream framing (4-byte big-endian length before each frame).
 *
 *   node dist/bench/stream-peers.js gen  ADDR FRAME_SIZE SECONDS DST_MAC SRC_MAC
 *   node dist/bench/stream-peers.js sink ADDR MODE(listen|connect) SECONDS MAC
 *
 * ADDR is a unix socket path. The generator writes one prebuilt 1 MiB batch
 * of framed frames again and again, honouring backpressure, for SECONDS. The
 * sink counts frames and bytes over a window of SECONDS that opens at the
 * first frame (so the generator must run longer) and prints one JSON line:
 * { frames, bytes, seconds }.
 *
 * STREAM_BENCH_PER_FRAME=1: the generator writes one frame per writev(2)
 * instead, length prefix and frame, as QEMU's `-netdev stream` sends each
 * packet of a guest (net/stream_data.c, net_stream_data_receive), and waits
 * for the socket to be writable when it is full.
 */
import { createConnection, createServer, type Socket } from 'node:net';
import { native } from '../src/native/index.js';
import { writeMac } from '../src/net/frame/ethernet.js';
import { socketFd } from '../src/util/sockets.js';
import { parseMacOrThrow } from './util.js';

const [role, addr, ...rest] = process.argv.slice(2);

function buildBatch(frameSize: number, dst: number, src: number): Buffer {
  const per = frameSize + 4;
  const count = Math.max(1, Math.floor((1 << 20) / per));
  const b = Buffer.alloc(count * per);
  for (let i = 0; i < count; i++) {
    const o = i * per;
    b.writeUInt32BE(frameSize, o);
    writeMac(b, o + 4, dst);
    writeMac(b, o + 10, src);
    b.writeUInt16BE(0x88b5, o + 16); // IEEE local experimental EtherType
    b.writeUInt32BE(i, o + 18);
  }
  return b;
}

function gen(): void {
  const [sizeText, secText, dstText, srcText] = rest;
  const size = Number(sizeText);
  const seconds = Number(secText);
  const batch = buildBatch(size, parseMacOrThrow(dstText), parseMacOrThrow(srcText));
  const sock = createConnection(addr as string);
  let stop = false;
  let batches = 0;
  const pump = (): void => {
    while (!stop) {
      batches++;
      if (!sock.write(batch)) return;
    }
  };
  const perFrame = process.env['STREAM_BENCH_PER_FRAME'] === '1';
  let sent = 0;
  sock.on('connect', () => {
    setTimeout(() => {
      stop = true;
      if (perFrame) process.stdout.write(`${JSON.stringify({ frames: sent })}\n`);
      sock.end();
    }, seconds * 1000);
    if (perFrame) pumpFrames(sock);
    else pump();
  });
  /**
   * One writev per frame. When the socket is full, the rest of the frame
   * goes to Node's queue, and the next frame waits for its 'drain'.
   */
  const pumpFrames = (s: typeof sock): void => {
    const n = native();
    const fd = socketFd(s) as number;
    const per = size + 4;
    const write = (): void => {
      for (let k = 0; k < 8192 && !stop; k++) {
        const w = n.streamWrite(fd, batch, 0, per, batch, 0, 0);
        if (w < 0) return;
        sent++;
        if (w < per) {
          if (s.write(batch.subarray(w, per))) setImmediate(write);
          else s.once('drain', write);
          return;
        }
      }
      if (!stop) setImmediate(write); // let the stop timer run
    };
    write();
  };
  if (!perFrame) sock.on('drain', pump);
  sock.on('error', () => {});
  sock.on('close', () => {
    process.stdout.write(`${JSON.stringify({ batches, frames: batches * (batch.length / (size + 4)) })}\n`);
  });
}

function sink(): void {
  const [mode, secText, macText] = rest;
  const seconds = Number(secText);
  const mac = parseMacOrThrow(macText);
  let frames = 0;
  let bytes = 0;
  let need = 0; // bytes still to skip of the current frame
  let hdr = 0; // bytes of the current length prefix seen so far
  let len = 0;
  let start = 0;
  let done = false;
  const finish = (): void => {
    done = true;
    const secs = (performance.now() - start) / 1000;
    process.stdout.write(`${JSON.stringify({ frames, bytes, seconds: secs })}\n`);
    process.exit(0);
  };
  const onData = (chunk: Buffer): void => {
    if (done) return;
    if (start === 0) {
      // The window opens at the first frame and lasts SECONDS.
      start = performance.now();
      setTimeout(finish, seconds * 1000);
    }
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (need > 0) {
        const take = Math.min(need, n - i);
        need -= take;
        i += take;
        continue;
      }
      len = len * 256 + (chunk[i] as number);
      i++;
      if (++hdr === 4) {
        frames++;
        bytes += len;
        need = len;
        hdr = 0;
        len = 0;
      }
    }
  };
  const attach = (s: Socket): void => {
    // Announce our MAC so the switch learns where we are (a broadcast from us).
    const hello = Buffer.alloc(4 + 60);
    hello.writeUInt32BE(60, 0);
    writeMac(hello, 4, 0xffff_ffff_ffff);
    writeMac(hello, 10, mac);
    hello.writeUInt16BE(0x88b5, 16);
    s.write(hello);
    s.on('data', onData);
    s.on('error', () => {});
  };
  if (mode === 'listen') {
    const srv = createServer((s) => {
      srv.close();
      attach(s);
    });
    srv.listen(addr as string, () => process.stdout.write('ready\n'));
  } else {
    const s = createConnection(addr as string, () => {
      process.stdout.write('ready\n');
      attach(s);
    });
  }
}

if (role === 'gen') gen();
else if (role === 'sink') sink();
else {
  process.stderr.write('usage: stream-peers.js gen|sink ADDR ...\n');
  process.exit(2);
}

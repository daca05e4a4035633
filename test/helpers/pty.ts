/**
 * A command under a real pseudo-terminal, as a person runs it in a terminal
 * window: python3's pty module opens the pair, makes the slave the child's
 * controlling terminal (so a resize delivers SIGWINCH), and relays. The test
 * reads what the command drew, types keys, resizes the window, and learns
 * afterwards whether the command left the terminal's modes as it found them.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';

/**
 * Driver: argv[1] rows, argv[2] cols, argv[3:] the command. stdin: JSON lines
 * `{"write": "q"}`, `{"resize": [rows, cols]}` or `{"signal": "SIGTERM"}`. stdout: the terminal output
 * as is. At the end one JSON line on stderr: exit code, whether the modes
 * (termios) afterwards equal those before, whether raw mode (no ECHO, no
 * ICANON) was seen while it ran.
 */
const DRIVER = String.raw`
import fcntl, json, os, select, signal, struct, subprocess, sys, termios
rows, cols, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
master, slave = os.openpty()
def size(r, c):
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack('HHHH', r, c, 0, 0))
size(rows, cols)
before = termios.tcgetattr(slave)
def ctty():
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, preexec_fn=ctty, close_fds=True)
signal.signal(signal.SIGTERM, lambda *a: (p.kill(), os._exit(1)))
raw_seen = False
buf = b''
out = sys.stdout.buffer
while True:
    lflag = termios.tcgetattr(slave)[3]
    if not (lflag & termios.ECHO) and not (lflag & termios.ICANON):
        raw_seen = True
    r, _, _ = select.select([master, 0], [], [], 0.05)
    if master in r:
        try:
            data = os.read(master, 65536)
        except OSError:
            data = b''
        if data:
            out.write(data); out.flush()
    if 0 in r:
        chunk = os.read(0, 4096)
        buf += chunk
        while b'\n' in buf:
            line, buf = buf.split(b'\n', 1)
            cmd = json.loads(line)
            if 'write' in cmd:
                os.write(master, cmd['write'].encode('latin1'))
            if 'resize' in cmd:
                size(*cmd['resize'])
            if 'signal' in cmd:
                os.kill(p.pid, getattr(signal, cmd['signal']))
    if p.poll() is not None:
        # Drain what it wrote last.
        while select.select([master], [], [], 0.2)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            out.write(data); out.flush()
        break
after = termios.tcgetattr(slave)
sys.stderr.write(json.dumps({'code': p.returncode, 'restored': after == before, 'raw_seen': raw_seen}) + '\n')
`;

/** How the command ended. */
export interface PtyResult {
  /** Its exit status (negative: killed by that signal). */
  code: number;
  /** The terminal modes afterwards equal those before it ran. */
  restored: boolean;
  /** Raw mode (no echo, no line editing) was on while it ran. */
  rawSeen: boolean;
}

/** A command running under a pseudo-terminal. */
export class PtyCommand {
  readonly #child: ChildProcess;
  /** Everything the command wrote to the terminal so far. */
  output = '';
  readonly #ended: Promise<PtyResult>;

  constructor(argv: readonly string[], size: { rows: number; cols: number }, env: NodeJS.ProcessEnv = process.env) {
    this.#child = spawn('python3', ['-c', DRIVER, String(size.rows), String(size.cols), ...argv], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...env, TERM: 'xterm-256color' },
    });
    this.#child.stdout?.setEncoding('latin1').on('data', (s: string) => {
      this.output += s;
    });
    let err = '';
    this.#child.stderr?.setEncoding('utf8').on('data', (s: string) => {
      err += s;
    });
    this.#ended = once(this.#child, 'exit').then(() => {
      const last = err.trim().split('\n').pop() ?? '';
      try {
        const r = JSON.parse(last) as { code: number; restored: boolean; raw_seen: boolean };
        return { code: r.code, restored: r.restored, rawSeen: r.raw_seen };
      } catch {
        throw new Error(`the pty driver failed:\n${err}`);
      }
    });
    // A test that gave up waiting may never ask how it ended.
    this.#ended.catch(() => {});
  }

  /** Types `keys` into the terminal. */
  type(keys: string): void {
    this.#child.stdin?.write(`${JSON.stringify({ write: keys })}\n`);
  }

  /** Sends the command a signal, e.g. `SIGTERM`. */
  signal(name: NodeJS.Signals): void {
    this.#child.stdin?.write(`${JSON.stringify({ signal: name })}\n`);
  }

  /** Resizes the window (the command gets SIGWINCH). */
  resize(rows: number, cols: number): void {
    this.#child.stdin?.write(`${JSON.stringify({ resize: [rows, cols] })}\n`);
  }

  /** Resolves once `p(output)` holds, polling every 50 ms; rejects after `ms` with the output so far. */
  async waitFor(p: (output: string) => boolean, ms = 60_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!p(this.output)) {
      if (Date.now() > deadline)
        throw new Error(`timed out; terminal output so far:\n${JSON.stringify(this.output.slice(-4000))}`);
      if (this.#child.exitCode !== null)
        throw new Error(`the command ended; output:\n${JSON.stringify(this.output.slice(-4000))}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Resolves when the command has exited (and the driver checked the terminal). */
  ended(): Promise<PtyResult> {
    return this.#ended;
  }

  /** Ends the command and the driver if still running. */
  kill(): void {
    if (this.#child.exitCode === null) this.#child.kill('SIGTERM');
  }
}

/**
 * The frames a full-screen program drew: each starts at cursor-home (ESC [ H)
 * and ends with clear-below (ESC [ J); a frame is its lines without the
 * clear-to-end-of-line codes.
 */
export function frames(output: string): string[][] {
  const out: string[][] = [];
  for (const part of output.split('\x1b[H').slice(1)) {
    const end = part.indexOf('\x1b[J');
    if (end < 0) continue;
    out.push(
      part
        .slice(0, end)
        .split(/\r*\n/) // the terminal's ONLCR turns the program's \r\n into \r\r\n
        .map((l) => l.replaceAll('\x1b[K', '')),
    );
  }
  return out;
}

/**
 * Linux network namespaces for tests (needs root and iproute2). Each
 * namespace gets a name unique to this process; delete them in after().
 *
 *   const ns = await Netns.create('tap');
 *   await ns.ip('addr', 'add', '10.0.0.1/24', 'dev', 'tap0');
 *   await ns.exec('ping', '-c', '1', '10.0.0.2');
 *   await ns.delete();
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

let seq = 0;

/** Output of a finished command. */
export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Runs a command; rejects with its stderr in the message when it fails. */
export async function run(cmd: string, args: readonly string[], timeoutMs = 60_000): Promise<RunResult> {
  try {
    const { stdout, stderr } = await execFileP(cmd, [...args], { timeout: timeoutMs, maxBuffer: 16 << 20 });
    return { stdout, stderr };
  } catch (err) {
    const e = err as Error & { stderr?: string; stdout?: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`, { cause: err });
  }
}

/** `ip ARGS...` in the test's own namespace. */
export function ip(...args: string[]): Promise<RunResult> {
  return run('ip', args);
}

/** Interface names unique to this process: `<prefix><pid base36><n>`, at most 15 bytes. */
export function uniqueIfname(prefix: string): string {
  return `${prefix}${process.pid.toString(36)}${(seq++).toString(36)}`.slice(0, 15);
}

export class Netns {
  #deleted = false;

  private constructor(readonly name: string) {}

  /** Creates a namespace named `vl-<tag>-<pid>-<n>` with its loopback up. */
  static async create(tag: string): Promise<Netns> {
    const ns = new Netns(`vl-${tag}-${process.pid}-${seq++}`);
    await ip('netns', 'add', ns.name);
    await ns.ip('link', 'set', 'lo', 'up');
    return ns;
  }

  /** Runs a command inside the namespace. */
  exec(cmd: string, ...args: string[]): Promise<RunResult> {
    return run('ip', ['netns', 'exec', this.name, cmd, ...args]);
  }

  /** `ip ARGS...` inside the namespace. */
  ip(...args: string[]): Promise<RunResult> {
    return run('ip', ['-n', this.name, ...args]);
  }

  /** Starts a long-running command inside the namespace (e.g. `iperf3 -s`); kill it with `.kill()`. */
  spawn(cmd: string, ...args: string[]): ReturnType<typeof spawn> {
    return spawn('ip', ['netns', 'exec', this.name, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /** Moves an interface of the caller's namespace into this one, gives it an address and brings it up. */
  async adopt(ifname: string, cidr?: string): Promise<void> {
    await ip('link', 'set', ifname, 'netns', this.name);
    if (cidr !== undefined) await this.ip('addr', 'add', cidr, 'dev', ifname);
    await this.ip('link', 'set', ifname, 'up');
  }

  /** Deletes the namespace (its interfaces go with it). Idempotent. */
  async delete(): Promise<void> {
    if (this.#deleted) return;
    this.#deleted = true;
    await ip('netns', 'del', this.name);
  }
}

/**
 * Puts `ns` on the LAN bridge `br0` of namespace `lan` with a veth pair:
 * the inner end gets `cidr` inside `ns`. Returns the inner interface's name.
 */
export async function joinLan(lan: Netns, ns: Netns, cidr: string, tag = 'ln'): Promise<string> {
  const inner = uniqueIfname(`${tag}h`);
  const outer = uniqueIfname(`${tag}b`);
  await ip('link', 'add', inner, 'type', 'veth', 'peer', 'name', outer);
  await ns.adopt(inner, cidr);
  await lan.adopt(outer);
  await lan.ip('link', 'set', outer, 'master', 'br0');
  return inner;
}

/**
 * `vmlink install-service [--prefix DIR] [--config PATH] [--exec CMD] [--dry-run]`:
 * installs the daemon as a systemd service. Writes the unit
 * (service-unit.ts) to /etc/systemd/system/vmlink.service, a default config
 * when there is none (an existing one is never touched, only checked), and
 * runs `systemctl daemon-reload` when systemd runs this machine. Prints each
 * thing it did, and what to run next. Runs locally; needs no daemon.
 *
 * The unit's ReadWritePaths= lists the directories the config makes the
 * daemon write outside /run/vmlink and /var/lib/vmlink (ProtectSystem=strict
 * makes every other path read-only): those of unix sockets it binds, VDE
 * switch directories, export roots, the control socket and the state dir.
 */
import { execFile } from 'node:child_process';
import { existsSync, realpathSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import type { Command } from 'commander';
import { loadConfig, parseConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { UsageError } from './args.js';
import { defineAction } from './context.js';
import { print } from './output.js';
import { DEFAULT_CONFIG, DEFAULT_EXEC, renderUnit, unitWord } from './service-unit.js';

/** Where units for the local administrator go. */
const UNIT_DIR = '/etc/systemd/system';
const UNIT_NAME = 'vmlink.service';
/** Made writable by the unit itself (RuntimeDirectory=, StateDirectory=). */
const OWN_DIRS = ['/run/vmlink', '/var/lib/vmlink'];
/** Hidden from the service by ProtectHome= (yes) and PrivateTmp=. */
const HOME_DIRS = ['/home', '/root', '/run/user'];
const TMP_DIRS = ['/tmp', '/var/tmp'];

const under = (p: string, dir: string): boolean => p === dir || p.startsWith(`${dir}/`);

/** The config written when there is none: this host, no networks or ports yet. */
export function defaultConfig(host = hostname()): string {
  const id = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/.test(host) ? host : 'vmlink';
  return `# vmlink daemon configuration (docs/daemon.md). Apply a change with: systemctl reload vmlink
host:
  id: ${id}
  control: /run/vmlink/vmlink.sock
  state_dir: /var/lib/vmlink
networks: []
ports: []
`;
}

/** Directories the daemon writes under `config`, outside those the unit makes writable itself. */
export function writableDirs(config: Config): string[] {
  const dirs = [dirname(config.host.control), config.host.state_dir, ...(config.storage?.roots ?? [])];
  const unix = (a: { type: string; path?: string } | undefined) => {
    if (a?.type === 'unix' && a.path !== undefined) dirs.push(dirname(a.path));
  };
  for (const p of config.ports) {
    if ('listen' in p) unix(p.listen);
    if (p.kind === 'dgram') unix(p.local);
    if (p.kind === 'vde') dirs.push(dirname(p.dir));
  }
  for (const a of config.storage?.listen ?? []) unix(a);
  const out: string[] = [];
  for (const d of [...new Set(dirs)].sort()) {
    if (OWN_DIRS.some((o) => under(d, o)) || out.some((o) => under(d, o))) continue;
    out.push(d);
  }
  return out;
}

/** The program that runs this CLI: this node and this script (resolved), quoted for a unit file. */
function thisProgram(): string {
  const script = process.argv[1];
  if (script === undefined) return DEFAULT_EXEC;
  return `${unitWord(process.execPath)} ${unitWord(realpathSync(script))}`;
}

function run(cmd: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ ok: !err, out: `${stdout}${stderr}`.trim() || (err ? err.message : '') });
    });
  });
}

export function addServiceCommand(program: Command, done: (code: number) => void): void {
  const cmd = program
    .command('install-service')
    .description(
      `install the daemon as a systemd service: ${UNIT_DIR}/${UNIT_NAME}, a default config if there is none, systemctl daemon-reload`,
    )
    .option('--config <path>', `the daemon's config file, an absolute path (default: ${DEFAULT_CONFIG})`)
    .option(
      '--prefix <dir>',
      'write the files under this directory (a staging root for a package) instead of /; no daemon-reload',
    )
    .option('--exec <command>', "the program ExecStart runs (default: this node and this vmlink's script)")
    .option('--dry-run', 'print the unit and what would be done; write nothing');
  defineAction(cmd, done, async (_args, opts) => {
    const config = String(opts['config'] ?? DEFAULT_CONFIG);
    if (!isAbsolute(config)) throw new UsageError(`--config "${config}" is not an absolute path`);
    const exec = opts['exec'] === undefined ? thisProgram() : String(opts['exec']);
    if (!exec.startsWith('/') && !exec.startsWith('"/'))
      throw new UsageError(`--exec "${exec}" does not start with an absolute path (systemd needs one)`);
    const prefix = opts['prefix'] === undefined ? '' : String(opts['prefix']);
    if (prefix !== '' && !isAbsolute(prefix)) throw new UsageError(`--prefix "${prefix}" is not an absolute path`);
    const dry = opts['dryRun'] === true;
    const at = (p: string) => (prefix === '' ? p : join(prefix, p));
    const notes: string[] = [];

    // The config: an existing one is checked (the service would not start with a bad one), a missing one written.
    const cfgFile = at(config);
    const have = existsSync(cfgFile);
    const cfgText = have ? undefined : defaultConfig();
    const parsed = have ? await loadConfig(cfgFile) : parseConfig(cfgText as string, 'the default config');
    const rw = writableDirs(parsed);
    for (const d of rw) {
      if (HOME_DIRS.some((h) => under(d, h)))
        notes.push(`${d} is under a home directory, which ProtectHome= hides from the service: move it`);
      if (TMP_DIRS.some((t) => under(d, t)))
        notes.push(
          `${d} is in /tmp: the service has its own (PrivateTmp=yes), QEMU would not see its sockets; use /run/vmlink`,
        );
    }
    const homeExec = HOME_DIRS.some((h) => exec.includes(`${h}/`));
    if (homeExec) notes.push('the program is under a home directory: the unit uses ProtectHome=read-only to reach it');
    const unit = renderUnit({ exec, config, readWritePaths: rw, protectHome: homeExec ? 'read-only' : 'yes' });
    const unitFile = at(join(UNIT_DIR, UNIT_NAME));

    const did: string[] = [];
    const verb = dry ? 'would write' : 'wrote';
    if (dry) {
      print(unit);
      did.push(`${verb} ${unitFile}`);
    } else {
      await mkdir(dirname(unitFile), { recursive: true });
      const old = await readFile(unitFile, 'utf8').catch(() => undefined);
      await writeFile(unitFile, unit, { mode: 0o644 });
      did.push(
        old === undefined || old === unit ? `${verb} ${unitFile}` : `${verb} ${unitFile} (replacing the one there)`,
      );
    }
    if (have) did.push(`kept ${cfgFile} (it exists and is valid)`);
    else {
      if (!dry) {
        await mkdir(dirname(cfgFile), { recursive: true, mode: 0o755 });
        await writeFile(cfgFile, cfgText as string, { mode: 0o640, flag: 'wx' });
      }
      did.push(`${verb} ${cfgFile}: a default config (host "${parsed.host.id}", no networks or ports yet)`);
    }
    if (rw.length) did.push(`ReadWritePaths for what the config writes: ${rw.join(' ')}`);

    if (prefix !== '') did.push('skipped systemctl daemon-reload (--prefix: not this machine)');
    else if (!existsSync('/run/systemd/system'))
      did.push('skipped systemctl daemon-reload: systemd does not run this machine (no /run/systemd/system)');
    else if (dry) did.push('would run systemctl daemon-reload');
    else {
      const r = await run('systemctl', ['daemon-reload']);
      if (!r.ok) throw new Error(`systemctl daemon-reload failed: ${r.out}`);
      did.push('ran systemctl daemon-reload');
    }
    for (const n of notes) did.push(`note: ${n}`);
    did.push(
      `next: edit ${config}, then systemctl enable --now vmlink; logs: journalctl -u vmlink -f; reload: systemctl reload vmlink`,
    );
    (dry ? process.stderr : process.stdout).write(`${did.join('\n')}\n`);
    return 0;
  });
}

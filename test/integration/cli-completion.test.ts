/**
 * `vmlink completion bash|zsh|fish` and `vmlink man`, made from the command
 * definitions: the bash script is sourced by a real bash and completes
 * commands, subcommands and options; the man page renders with man(1)/groff
 * without warnings and lists every command `--help` lists.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runCli } from '../helpers/daemon.js';

/** True when `cmd` is on the PATH. */
function have(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Runs a program; resolves with status and output. */
function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

describe('shell completion and the man page', { timeout: 120_000 }, () => {
  let dir: string;
  let bashScript: string;
  let topCommands: string[];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmlink-completion-'));
    const r = await runCli(['completion', 'bash']);
    assert.equal(r.code, 0, r.stderr);
    bashScript = join(dir, 'vmlink.bash');
    await writeFile(bashScript, r.stdout);
    // The commands `vmlink --help` lists, the source both are checked against.
    const help = await runCli(['--help']);
    const section = help.stdout.split(/^Commands:$/m)[1] ?? '';
    topCommands = [...section.matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1] as string).filter((c) => c !== 'help');
    assert.ok(topCommands.includes('network') && topCommands.includes('guest-image'), help.stdout);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** What bash completes for the words typed so far (the last word is the one being completed). */
  async function complete(...words: string[]): Promise<string[]> {
    const quoted = words.map((w) => `'${w}'`).join(' ');
    const r = await run('bash', [
      '-c',
      `source '${bashScript}'; COMP_WORDS=(vmlink ${quoted}); COMP_CWORD=${words.length}; _vmlink; printf '%s\\n' "\${COMPREPLY[@]}"`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.split('\n').filter(Boolean);
  }

  test('bash: the sourced script completes a command, a subcommand and an option', async () => {
    assert.deepEqual(await complete('net'), ['network']);
    assert.deepEqual(await complete('network', 'cr'), ['create']);
    assert.deepEqual(await complete('--control', '/run/vmlink/a.sock', 'network', 'create', '--v'), ['--vni']);
    assert.deepEqual((await complete('')).sort(), [...topCommands].sort());
    assert.ok((await complete('capture', 'vm1', '-')).includes('--write'));
  });

  test('bash: complete(1) registers the function for vmlink', async () => {
    const r = await run('bash', ['-c', `source '${bashScript}'; complete -p vmlink`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /complete -o default -F _vmlink vmlink/);
  });

  test('zsh and fish: scripts for each, with every top-level command', async () => {
    const zsh = await runCli(['completion', 'zsh']);
    assert.equal(zsh.code, 0, zsh.stderr);
    assert.match(zsh.stdout, /^#compdef vmlink$/m);
    assert.match(zsh.stdout, /bashcompinit/);
    const fish = await runCli(['completion', 'fish']);
    assert.equal(fish.code, 0, fish.stderr);
    for (const c of topCommands) {
      assert.match(
        fish.stdout,
        new RegExp(`^complete -c vmlink -f -n 'test \\(__vmlink_path\\) = \\\\'vmlink\\\\'' -a '${c}' -d `, 'm'),
      );
    }
    for (const [shell, text] of [
      ['zsh', zsh.stdout],
      ['fish', fish.stdout],
    ] as const) {
      if (!have(shell)) continue; // syntax-checked where the shell is installed
      const f = join(dir, `vmlink.${shell}`);
      await writeFile(f, text);
      const r = await run(shell, ['-n', f]);
      assert.equal(r.code, 0, r.stderr);
    }
    const bad = await runCli(['completion', 'tcsh']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /"tcsh" is not one of: bash, zsh, fish/);
  });

  test('man: the page renders without warnings and documents every command, exit status and environment', async () => {
    const r = await runCli(['man']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^\.TH VMLINK 1 /);
    const page = join(dir, 'vmlink.1');
    await writeFile(page, r.stdout);
    let text: string;
    if (have('groff')) {
      const g = await run('groff', ['-man', '-Tutf8', '-ww', '-P', '-c', page]);
      assert.equal(g.code, 0, g.stderr);
      assert.equal(g.stderr, '', `groff warnings:\n${g.stderr}`);
      text = g.stdout.replace(/.\x08/g, '');
    } else {
      text = r.stdout.replaceAll('\\-', '-').replaceAll('\\fB', '').replaceAll('\\fR', '');
    }
    for (const c of topCommands) assert.match(text, new RegExp(`vmlink ${c}\\b`), `no section for ${c}`);
    assert.match(text, /vmlink network create/);
    assert.match(text, /--vni <N>/);
    for (const h of ['NAME', 'SYNOPSIS', 'COMMANDS', 'ENVIRONMENT', 'EXIT STATUS'])
      assert.match(text, new RegExp(`^${h}$`, 'm'));
    assert.match(text, /VMLINK_CONTROL/);
    if (have('man')) {
      const m = await run('man', ['-l', page]);
      assert.equal(m.code, 0, m.stderr);
      assert.match(m.stdout, /VMLINK\(1\)/);
    }
  });
});

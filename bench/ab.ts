/**
 * `npm run bench:ab`: the A/B comparison of two trees in one run. Makes a
 * clean copy of a base git ref (A) and of the current tree (B: this working
 * tree's tracked and untracked files, or another ref with --head), installs
 * and builds each (TypeScript and the native addon), then runs the frame-rate
 * scenarios of both, interleaved (A, B, A, B, ...: drift of a shared machine
 * hits both), each run through the tree's own `dist/bench/run.js --repeat 1`
 * with the same arguments. Reads the runs' JSON results and prints, per
 * scenario, row and metric, the median of A and of B with their spread
 * (min-max over the repeats), the ratio B/A and whether the two ranges overlap.
 *
 *   node dist/bench/ab.js [--base REF] [--head REF] [--seconds S] [--repeat N] [--pin]
 *                         [--only stream,vhost,tap] [--out FILE] [--keep]
 *
 * --base defaults to 8323555 (the last commit before the restructuring of
 * issue 13); --head defaults to this working tree as it is. --out writes the
 * table and every sample as JSON. --keep leaves the copies in the temp dir.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { ScenarioResult } from './types.js';
import { median } from './util.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

/** The metrics compared per scenario: field of a result row -> label. All are "higher is better". */
const METRICS: Record<string, { key: string; fields: Record<string, string> }> = {
  stream: { key: 'frame_bytes', fields: { vmlink_fps: 'frames/s', ratio: 'vmlink/direct' } },
  vhost: {
    key: 'frame_bytes',
    fields: {
      vhost_fps: 'vhost-user frames/s',
      vhost_halt_polled_fps: 'halt-polled frames/s',
      stream_fps: 'stream frames/s',
      ratio: 'vhost/stream',
    },
  },
  tap: { key: 'offloads', fields: { vmlink_gbps: 'Gbit/s', ratio: 'vmlink/bridge' } },
};

/** One tree under test: where its copy lives and the results its runs wrote. */
interface Tree {
  label: 'base' | 'current';
  ref: string;
  dir: string;
  /** scenario -> the result of each run, in order. */
  runs: Map<string, ScenarioResult[]>;
}

/** One line of the comparison. */
interface AbRow {
  scenario: string;
  row: string;
  metric: string;
  base: number[];
  current: number[];
  /** median(current) / median(base). */
  ratio: number;
  /** The min-max ranges of base and current overlap: no difference the repeats can tell apart. */
  overlap: boolean;
}

function sh(cmd: string, args: string[], cwd: string): void {
  const r = spawnSync(cmd, args, { cwd, stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed: exit ${r.status ?? r.signal}`);
}

function git(args: string[]): string {
  return execFileSync('git', ['-C', root, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
}

/** A copy of `ref` (git archive), or of this working tree (tracked and untracked, not ignored) when ref is undefined. */
function copyTree(ref: string | undefined, dir: string): void {
  if (ref !== undefined) {
    const tar = execFileSync('git', ['-C', root, 'archive', '--format=tar', ref], { maxBuffer: 1 << 30 });
    execFileSync('tar', ['-x', '-C', dir], { input: tar });
    return;
  }
  for (const f of git(['ls-files', '-co', '--exclude-standard', '-z']).split('\0')) {
    if (f === '' || !existsSync(join(root, f))) continue;
    mkdirSync(dirname(join(dir, f)), { recursive: true });
    cpSync(join(root, f), join(dir, f));
  }
}

/**
 * Installs and builds a copy: node_modules hard-linked from this tree when
 * the lockfiles are the same, else `npm ci` (which builds the addon through
 * the "install" script); the addon built when it is not; then tsc.
 */
function build(dir: string): void {
  const lock = (d: string) => readFileSync(join(d, 'package-lock.json'), 'utf8');
  if (existsSync(join(root, 'node_modules')) && lock(dir) === lock(root)) {
    console.log(`ab: ${dir}: same lockfile, node_modules linked from ${root}`);
    const r = spawnSync('cp', ['-al', join(root, 'node_modules'), join(dir, 'node_modules')], { stdio: 'inherit' });
    if (r.status !== 0) cpSync(join(root, 'node_modules'), join(dir, 'node_modules'), { recursive: true });
  } else {
    console.log(`ab: ${dir}: lockfile differs, npm ci`);
    sh('npm', ['ci', '--prefer-offline', '--no-audit', '--no-fund'], dir);
  }
  if (!existsSync(join(dir, 'build', 'Release', 'vmlink_native.node'))) sh('sh', ['scripts/build-native.sh'], dir);
  sh('npm', ['run', 'build', '--silent'], dir);
}

/** Copies and builds `ref` (this working tree when undefined); the tree is pushed to `trees` first, so it is removed on failure too. */
function prepare(trees: Tree[], label: Tree['label'], ref: string | undefined): Tree {
  const dir = mkdtempSync(join(tmpdir(), `vmlink-ab-${label}-`));
  const name =
    ref === undefined
      ? `working tree at ${git(['rev-parse', '--short', 'HEAD']).trim()}`
      : git(['rev-parse', '--short', ref]).trim();
  const t: Tree = { label, ref: name, dir, runs: new Map() };
  trees.push(t);
  console.log(`ab: ${label} = ${name} in ${dir}`);
  copyTree(ref, dir);
  build(dir);
  return t;
}

/**
 * One run of one scenario in `t`; keeps the result its run.js wrote. A run
 * that fails (a peer that did not start on a loaded machine) is reported and
 * left out: false.
 */
function runOnce(t: Tree, scenario: string, args: string[]): boolean {
  const out = join(t.dir, 'bench', 'results');
  const before = new Set(existsSync(out) ? readdirSync(out) : []);
  console.log(`ab: ${t.label}: ${scenario}`);
  try {
    sh(process.execPath, [join(t.dir, 'dist', 'bench', 'run.js'), '--only', scenario, '--repeat', '1', ...args], t.dir);
    const fresh = readdirSync(out).filter((f) => !before.has(f) && f.startsWith(`${scenario}-`) && f.endsWith('.json'));
    if (fresh.length !== 1) throw new Error(`expected one new ${scenario} result in ${out}, found ${fresh.length}`);
    const r = JSON.parse(readFileSync(join(out, fresh[0] as string), 'utf8')) as ScenarioResult;
    const list = t.runs.get(scenario) ?? [];
    list.push(r);
    t.runs.set(scenario, list);
    return true;
  } catch (err) {
    console.error(`ab: ${t.label}: ${scenario} failed, run left out: ${(err as Error).message}`);
    return false;
  }
}

function values(t: Tree, scenario: string, key: string, row: string, field: string): number[] {
  return (t.runs.get(scenario) ?? [])
    .map((r) => r.rows.find((x) => String(x[key]) === row)?.[field])
    .filter((v): v is number => typeof v === 'number');
}

/** The comparison rows, in scenario, row and metric order. */
function compare(base: Tree, current: Tree, scenarios: string[]): AbRow[] {
  const out: AbRow[] = [];
  for (const scenario of scenarios) {
    const m = METRICS[scenario];
    if (m === undefined) continue;
    const rows = (base.runs.get(scenario)?.[0]?.rows ?? []).map((r) => String(r[m.key]));
    for (const row of rows) {
      for (const [field, metric] of Object.entries(m.fields)) {
        const a = values(base, scenario, m.key, row, field);
        const b = values(current, scenario, m.key, row, field);
        if (a.length === 0 || b.length === 0) continue;
        out.push({
          scenario,
          row: m.key === 'frame_bytes' ? `${row} B` : `offloads ${row}`,
          metric,
          base: a,
          current: b,
          ratio: median(b) / median(a),
          overlap: Math.min(...b) <= Math.max(...a) && Math.min(...a) <= Math.max(...b),
        });
      }
    }
  }
  return out;
}

function fmt(x: number): string {
  if (x >= 1e6) return `${(x / 1e6).toFixed(2)} M`;
  if (x >= 1e3) return `${(x / 1e3).toFixed(1)} k`;
  return x >= 10 ? x.toFixed(1) : x.toFixed(3);
}

/** `median (min-max, ±spread%)` of a sample. */
function cell(xs: number[]): string {
  const m = median(xs);
  const spread = m === 0 ? 0 : ((Math.max(...xs) - Math.min(...xs)) / 2 / m) * 100;
  return `${fmt(m)} (${fmt(Math.min(...xs))}-${fmt(Math.max(...xs))}, ±${spread.toFixed(1)}%)`;
}

/** The comparison as a markdown table. */
function table(rows: AbRow[], base: string, current: string): string {
  return [
    `| scenario | row | metric | base ${base} | current ${current} | current/base | verdict |`,
    '| --- | --- | --- | ---: | ---: | ---: | --- |',
    ...rows.map((r) => {
      const verdict = r.overlap ? 'within noise' : r.ratio > 1 ? 'faster' : 'slower';
      return `| ${r.scenario} | ${r.row} | ${r.metric} | ${cell(r.base)} | ${cell(r.current)} | ${r.ratio.toFixed(3)} | ${verdict} |`;
    }),
  ].join('\n');
}

function main(): void {
  const { values: v } = parseArgs({
    options: {
      base: { type: 'string', default: '8323555' },
      head: { type: 'string' },
      seconds: { type: 'string', default: '3' },
      repeat: { type: 'string', default: '3' },
      pin: { type: 'boolean', default: false },
      only: { type: 'string', default: 'stream,vhost,tap' },
      out: { type: 'string' },
      keep: { type: 'boolean', default: false },
    },
  });
  const repeat = Number(v.repeat);
  const scenarios = v.only.split(',').filter((s) => s !== '');
  const unknown = scenarios.filter((s) => METRICS[s] === undefined);
  if (!(Number(v.seconds) > 0) || !Number.isInteger(repeat) || repeat < 1 || unknown.length > 0) {
    console.error(
      `usage: ab.js [--base REF] [--head REF] [--seconds S>0] [--repeat N>=1] [--pin] [--only ${Object.keys(METRICS).join(',')}] [--out FILE] [--keep]` +
        (unknown.length > 0 ? `\nunknown scenario(s): ${unknown.join(', ')}` : ''),
    );
    process.exit(2);
  }
  const args = ['--seconds', v.seconds, ...(v.pin ? ['--pin'] : [])];
  const trees: Tree[] = [];
  try {
    const base = prepare(trees, 'base', v.base);
    const current = prepare(trees, 'current', v.head);
    const failed: string[] = [];
    for (let i = 0; i < repeat; i++) {
      for (const s of scenarios) {
        for (const t of [base, current]) if (!runOnce(t, s, args)) failed.push(`${t.label} ${s} run ${i + 1}`);
      }
    }
    const rows = compare(base, current, scenarios);
    const md = table(rows, base.ref, current.ref);
    console.log(
      `\nA/B: ${repeat} interleaved runs of ${v.seconds} s each, ${v.pin ? 'pinned' : 'unpinned'}; median (min-max, ±half the range in % of the median)\n`,
    );
    console.log(md);
    if (failed.length > 0) console.log(`\nleft out (failed): ${failed.join(', ')}`);
    if (v.out !== undefined) {
      const result = {
        when: new Date().toISOString(),
        base: base.ref,
        current: current.ref,
        args,
        repeat,
        failed,
        rows,
      };
      writeFileSync(v.out, `${JSON.stringify(result, null, 2)}\n`);
      console.log(`wrote ${v.out}`);
    }
  } finally {
    for (const t of trees) {
      if (v.keep) console.log(`ab: kept ${t.dir}`);
      else rmSync(t.dir, { recursive: true, force: true });
    }
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) main();

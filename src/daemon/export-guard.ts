/**
 * What an export may use on this host, checked before its backend opens:
 * files (file images, cow base and overlay files, cow bitmaps) only inside
 * `storage.roots`, memory exports within `storage.memory_limit` together,
 * no copy-on-write export that reads from itself (same file as base and
 * overlay, or a chain of remote backends through this daemon's own NBD
 * server back to it), and no file written by two exports.
 *
 * Paths are resolved with realpath (symlinks and `..` cannot leave a root);
 * a file that does not exist yet is resolved through its directory.
 */
import { realpath, stat } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import { basename, dirname, join, resolve, sep } from 'node:path';
import type { BackendConfig, ExportConfig } from '../config/schema.js';
import type { Address } from '../util/address.js';
import { ExportCowLoopError, ExportFileInUseError, ExportMemoryLimitError, ExportPathError } from './errors.js';

/** One file an export uses. */
export interface FileClaim {
  /** Config field, e.g. `backend.overlay.path`. */
  field: string;
  /** As given. */
  path: string;
  /** Real path (symlinks and `..` resolved). */
  real: string;
  /** `dev:ino` when the file exists (hard links of one file match). */
  inode: string | undefined;
  /** The export writes it. */
  writable: boolean;
}

/** What an export holds once admitted: its files, its memory and the exports of this daemon it reads through NBD. */
export interface ExportClaims {
  files: FileClaim[];
  /** Bytes of memory backends (declared sizes). */
  memoryBytes: number;
  /** Names of this daemon's exports its remote backends read. */
  reads: string[];
}

/** What the checks compare with. */
export interface GuardContext {
  /** Allowed directories as configured (`storage.roots` or the default). */
  roots: readonly string[];
  /** Most bytes all memory exports may declare together. */
  memoryLimit: number;
  /** True when `memoryLimit` is the default (a quarter of RAM), for the message. */
  memoryLimitIsDefault: boolean;
  /** The claims of every export admitted so far, by name. */
  admitted: ReadonlyMap<string, ExportClaims>;
  /** Where this daemon's NBD server listens (to spot a remote backend that points back at it). */
  ownAddresses: readonly Address[];
}

/**
 * Checks an export against the roots, the memory limit, loops and files in
 * use. Resolves with its claims; rejects with ERR_EXPORT_PATH_OUTSIDE_ROOTS,
 * ERR_EXPORT_MEMORY_LIMIT, ERR_EXPORT_COW_LOOP or ERR_EXPORT_FILE_IN_USE.
 */
export async function checkExport(spec: ExportConfig, ctx: GuardContext): Promise<ExportClaims> {
  const claims: ExportClaims = { files: [], memoryBytes: 0, reads: [] };
  const ownUnix = await Promise.all(
    ctx.ownAddresses.flatMap((a) => (a.type === 'unix' ? [realOrResolved(a.path)] : [])),
  );
  await collect(spec.backend, 'backend', !spec.read_only, claims, ctx, ownUnix);
  const roots = await Promise.all(ctx.roots.map(realOrResolved));
  for (const f of claims.files) {
    if (!roots.some((r) => f.real.startsWith(r.endsWith(sep) ? r : r + sep)))
      throw new ExportPathError(spec.name, f.field, f.path, f.real, ctx.roots);
  }
  checkMemory(spec.name, claims.memoryBytes, ctx);
  checkSelf(spec, claims);
  checkLoop(spec.name, claims.reads, ctx.admitted);
  checkInUse(spec.name, claims.files, ctx.admitted);
  return claims;
}

/** Walks a backend, adding its files, memory and reads of our own exports to `claims`. */
async function collect(
  b: BackendConfig,
  field: string,
  writable: boolean,
  claims: ExportClaims,
  ctx: GuardContext,
  ownUnix: string[],
): Promise<void> {
  switch (b.type) {
    case 'file':
      claims.files.push(await fileClaim(`${field}.path`, b.path, writable));
      return;
    case 'memory':
      claims.memoryBytes += b.size;
      return;
    case 'remote':
      if (await isOwnAddress(b.address, ctx.ownAddresses, ownUnix)) claims.reads.push(b.export ?? '');
      return;
    case 'cow':
      await collect(b.base, `${field}.base`, false, claims, ctx, ownUnix);
      await collect(b.overlay, `${field}.overlay`, writable, claims, ctx, ownUnix);
      if (b.bitmap_path !== undefined) claims.files.push(await fileClaim(`${field}.bitmap_path`, b.bitmap_path, true));
  }
}

async function fileClaim(field: string, path: string, writable: boolean): Promise<FileClaim> {
  const real = await realOrResolved(path);
  return { field, path, real, inode: await inodeOf(real), writable };
}

/** `dev:ino` of a file, or undefined when it does not exist (yet). */
async function inodeOf(path: string): Promise<string | undefined> {
  try {
    const st = await stat(path);
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

/** After the backend opened (and created its files): the inodes of files that did not exist when checked. */
export async function settleClaims(claims: ExportClaims): Promise<void> {
  for (const f of claims.files) f.inode ??= await inodeOf(f.real);
}

/** realpath of `path`, or of its nearest existing ancestor with the rest appended (normalised). */
export async function realOrResolved(path: string): Promise<string> {
  const abs = resolve(path);
  try {
    return await realpath(abs);
  } catch {
    const parent = dirname(abs);
    if (parent === abs) return abs;
    return join(await realOrResolved(parent), basename(abs));
  }
}

/**
 * True when `a` is one of this daemon's NBD listen addresses: the same unix
 * path, or a TCP port we listen on at an address of this host (a wildcard
 * listener takes every local interface address; host names other than
 * localhost are not resolved).
 */
async function isOwnAddress(a: Address, own: readonly Address[], ownUnix: string[]): Promise<boolean> {
  if (a.type === 'unix') return ownUnix.includes(await realOrResolved(a.path));
  if (a.type !== 'tcp' || a.port === 0) return false;
  const local = localAddresses();
  const host = a.host === 'localhost' ? '127.0.0.1' : a.host;
  return own.some((o) => {
    if (o.type !== 'tcp' || o.port !== a.port) return false;
    if (o.host === '0.0.0.0' || o.host === '::') return local.has(host);
    return o.host === host || (LOOPBACK.has(o.host) && LOOPBACK.has(host));
  });
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/** Every address of this host's interfaces, with the wildcard and loopback names. */
function localAddresses(): Set<string> {
  const out = new Set(['0.0.0.0', '::', ...LOOPBACK]);
  for (const list of Object.values(networkInterfaces())) for (const i of list ?? []) out.add(i.address);
  return out;
}

function checkMemory(name: string, bytes: number, ctx: GuardContext): void {
  if (bytes === 0) return;
  let total = 0;
  for (const c of ctx.admitted.values()) total += c.memoryBytes;
  if (total + bytes > ctx.memoryLimit)
    throw new ExportMemoryLimitError(name, bytes, total, ctx.memoryLimit, ctx.memoryLimitIsDefault);
}

/** A cow export whose parts are one file (base = overlay, or the bitmap on either), or that reads itself. */
function checkSelf(spec: ExportConfig, claims: ExportClaims): void {
  const files = claims.files;
  for (let i = 0; i < files.length; i++) {
    for (let j = i + 1; j < files.length; j++) {
      const a = files[i] as FileClaim;
      const b = files[j] as FileClaim;
      if (sameFile(a, b))
        throw new ExportCowLoopError(
          spec.name,
          `${a.field} and ${b.field} are the same file (${a.real}); give each part its own file`,
        );
    }
  }
  if (claims.reads.includes(spec.name))
    throw new ExportCowLoopError(
      spec.name,
      `a remote backend reads export "${spec.name}" of this daemon, that is the export itself`,
    );
}

/** Refuses an export whose remote backends lead through this daemon's exports back to it. */
function checkLoop(name: string, reads: readonly string[], admitted: ReadonlyMap<string, ExportClaims>): void {
  const path: string[] = [name];
  const seen = new Set<string>();
  const visit = (n: string): boolean => {
    if (n === name) return true;
    if (seen.has(n)) return false;
    seen.add(n);
    path.push(n);
    for (const next of admitted.get(n)?.reads ?? []) if (visit(next)) return true;
    path.pop();
    return false;
  };
  for (const r of reads) {
    if (visit(r))
      throw new ExportCowLoopError(
        name,
        `its remote backends read through this daemon's exports back to itself (${[...path, name].map((n) => `"${n}"`).join(' -> ')})`,
      );
  }
}

function checkInUse(name: string, files: readonly FileClaim[], admitted: ReadonlyMap<string, ExportClaims>): void {
  for (const f of files) {
    if (!f.writable) continue;
    for (const [other, c] of admitted) {
      if (other === name) continue;
      const hit = c.files.find((g) => g.writable && sameFile(f, g));
      if (hit) throw new ExportFileInUseError(name, f.field, f.real, other, hit.field);
    }
  }
}

function sameFile(a: FileClaim, b: FileClaim): boolean {
  return a.real === b.real || (a.inode !== undefined && a.inode === b.inode);
}

/**
 * Join tokens: what `vmlink cluster token` prints and `vmlink cluster join`
 * takes. A token is short enough to paste and carries what the joining host
 * needs to find and trust an issuer:
 *
 *   vmlink1.<id>.<secret>.<payload>
 *
 * - `id`: 8 characters [a-z2-7] (40 random bits), the key of its record;
 * - `secret`: 22 base64url characters (128 random bits), shown once, stored
 *   only as its SHA-256;
 * - `payload`: base64url of JSON `{"join": ["IP:PORT", ...], "ca": "<hex>"}`:
 *   the join endpoints of the fabric's issuers and the SHA-256 of the fabric
 *   CA's public key (DER SubjectPublicKeyInfo, as kubeadm's
 *   `--discovery-token-ca-cert-hash`), which the joining host pins before it
 *   sends anything (join-client.ts).
 *
 * Record in etcd, under the fabric prefix (listTokens, revokeToken): `tokens/<id>` =
 * `{v: 1, hash: sha256hex(secret), created, expires: ISO, rejoin?: host}`,
 * attached to a lease of the token's lifetime plus {@link AFTERLIFE_SEC}.
 * Expiry is decided by `expires`; the lease only removes the record later,
 * so a join shortly after expiry (or a second use) is told "expired" (or
 * "used") rather than "unknown". A join consumes the token in one
 * transaction that compares the record's exact value and replaces it with a
 * tombstone `{..., used: ISO, host}` under the same lease: of two joins with
 * one token, exactly one wins. `rejoin` names the one existing host whose key
 * the token may replace (a host reinstalled after a wipe); no other token
 * can take over a registered host id.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Namespace } from 'etcd3';
import { describeError } from '../errors.js';
import { publicKeyFingerprint } from '../pki/csr.js';
import { HOST_ID_RE } from '../pki/openssl.js';
import {
  JoinBadRequestError,
  JoinTokenExpiredError,
  JoinTokenInvalidError,
  JoinTokenUsedError,
} from './join-errors.js';
import { parseJoinAddress } from './join-protocol.js';

/** Default token lifetime, seconds (1 h). */
export const TOKEN_TTL_DEFAULT_SEC = 3600;
/** Longest token lifetime, seconds (7 days). */
const TOKEN_TTL_MAX_SEC = 7 * 86_400;
/** How long a token's record outlives the token, seconds: long enough to say "expired" or "used" to a late join. */
const AFTERLIFE_SEC = 900;
const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';
const TOKEN_RE = /^vmlink1\.([a-z2-7]{8})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{1,2048})$/;
/** `<id>.<secret>`: what the joining host sends to the issuer. */
const CREDENTIAL_RE = /^([a-z2-7]{8})\.([A-Za-z0-9_-]{22})$/;
const MAX_JOIN_ADDRESSES = 8;

/** The parts of a token. */
export interface ParsedToken {
  id: string;
  secret: string;
  /** Join endpoints, `IP:PORT` (`[v6]:PORT`), tried in order. */
  join: string[];
  /** SHA-256 (hex) of the fabric CA's public key. */
  ca: string;
}

/** A token's record under `tokens/<id>`. */
interface TokenRecord {
  v: 1;
  hash: string;
  created: string;
  expires: string;
  rejoin?: string;
  /** Set when consumed: when and by which host. */
  used?: string;
  host?: string;
}

function checkJoinAddress(a: unknown): string | undefined {
  if (typeof a !== 'string') return 'a join address is not a string';
  const p = parseJoinAddress(a);
  if (typeof p === 'string' || p.port === 0) return `join address "${a}" is not IP:PORT with a port 1-65535`;
  return undefined;
}

function validPayload(p: unknown): string | { join: string[]; ca: string } {
  if (typeof p !== 'object' || p === null) return 'its payload is not a JSON object';
  const { join, ca } = p as { join?: unknown; ca?: unknown };
  if (!Array.isArray(join) || join.length === 0 || join.length > MAX_JOIN_ADDRESSES)
    return `its payload has no list of 1-${MAX_JOIN_ADDRESSES} join addresses`;
  for (const a of join) {
    const bad = checkJoinAddress(a);
    if (bad) return `its payload's ${bad}`;
  }
  if (typeof ca !== 'string' || !/^[0-9a-f]{64}$/.test(ca))
    return "its payload's CA fingerprint is not 64 hex digits (SHA-256)";
  return { join: join as string[], ca };
}

/** Parses a token; a malformed one is a JoinTokenInvalidError that says which part is wrong. */
export function parseToken(text: string): ParsedToken {
  const t = text.trim();
  if (!t.startsWith('vmlink1.'))
    throw new JoinTokenInvalidError(
      `"${t.slice(0, 16)}${t.length > 16 ? '...' : ''}" is not a vmlink join token (they start with "vmlink1.")`,
    );
  const m = TOKEN_RE.exec(t);
  if (!m)
    throw new JoinTokenInvalidError(
      'the token is not vmlink1.<id: 8 of a-z2-7>.<secret: 22 base64url characters>.<payload: base64url> ' +
        '(was it cut when copied?)',
    );
  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(m[3] as string, 'base64url').toString('utf8'));
  } catch {
    throw new JoinTokenInvalidError('its payload is not base64url JSON (was it cut when copied?)');
  }
  const p = validPayload(payload);
  if (typeof p === 'string') throw new JoinTokenInvalidError(p);
  return { id: m[1] as string, secret: m[2] as string, join: p.join, ca: p.ca };
}

/** The text form of a token. */
function formatToken(p: ParsedToken): string {
  const payload = Buffer.from(JSON.stringify({ join: p.join, ca: p.ca })).toString('base64url');
  return `vmlink1.${p.id}.${p.secret}.${payload}`;
}

function newId(): string {
  return [...randomBytes(8)].map((b) => ID_ALPHABET[b & 31]).join('');
}

function sha256hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function tokenKey(id: string): string {
  return `tokens/${id}`;
}

/** Options of {@link createToken}. */
export interface CreateTokenOptions {
  /** Lifetime in seconds, 1 to 604800 (7 days); default 3600. */
  ttlSec?: number;
  /** Join endpoints of the fabric's issuers, `IP:PORT`, 1 to 8. */
  joinAddresses: string[];
  /** The fabric CA's certificate, PEM: the token pins its public key. */
  caCertPem: string;
  /** The one registered host whose key this token may replace (rejoin after a reinstall); default none. */
  rejoin?: string;
}

/** A token made by {@link createToken}. */
export interface CreatedToken {
  /** The token to give to the joining host (contains the secret: shown once). */
  token: string;
  id: string;
  expires: Date;
}

/**
 * Makes a single-use join token and stores its record (`tokens/<id>`, leased)
 * through `kv`, the fabric's etcd namespace. Bad options are
 * JoinBadRequestErrors; etcd failures are passed on as they are.
 */
export async function createToken(kv: Namespace, opts: CreateTokenOptions): Promise<CreatedToken> {
  const ttl = opts.ttlSec ?? TOKEN_TTL_DEFAULT_SEC;
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > TOKEN_TTL_MAX_SEC)
    throw new JoinBadRequestError(
      `token lifetime ${ttl} s is out of range: give whole seconds, 1 to ${TOKEN_TTL_MAX_SEC}`,
    );
  let ca: string;
  try {
    ca = publicKeyFingerprint(opts.caCertPem);
  } catch (err) {
    throw new JoinBadRequestError(`the fabric CA certificate is not a PEM certificate: ${describeError(err)}`);
  }
  const payload = validPayload({ join: opts.joinAddresses, ca });
  if (typeof payload === 'string')
    throw new JoinBadRequestError(
      `cannot make a join token: ${payload.replace("its payload's", 'the').replace('its payload', 'the token')}`,
    );
  if (opts.rejoin !== undefined && !HOST_ID_RE.test(opts.rejoin))
    throw new JoinBadRequestError(`rejoin "${opts.rejoin}" is not a host id`);
  const secret = randomBytes(16).toString('base64url');
  const now = Date.now();
  const expires = new Date(now + ttl * 1000);
  const record: TokenRecord = {
    v: 1,
    hash: sha256hex(secret),
    created: new Date(now).toISOString(),
    expires: expires.toISOString(),
    ...(opts.rejoin !== undefined ? { rejoin: opts.rejoin } : {}),
  };
  const lease = await kv.leaseClient.leaseGrant({ TTL: ttl + AFTERLIFE_SEC });
  // 40-bit ids rarely collide; the transaction makes sure a collision never overwrites a live token.
  for (let attempt = 0; attempt < 3; attempt++) {
    const id = newId();
    const r = await kv
      .if(tokenKey(id), 'Version', '==', 0)
      .then(kv.put(tokenKey(id)).value(JSON.stringify(record)).lease(lease.ID))
      .commit();
    if (r.succeeded) return { token: formatToken({ id, secret, ...payload }), id, expires };
  }
  await kv.leaseClient.leaseRevoke({ ID: lease.ID }).catch(() => undefined);
  throw new JoinBadRequestError('could not find a free token id in 3 attempts; try again');
}

/** A token the issuer checked: its record as stored, to consume it. */
export interface CheckedToken {
  id: string;
  /** The record's stored bytes: the consuming transaction compares them. */
  raw: Buffer;
  /** The host whose key this token may replace, if any. */
  rejoin: string | undefined;
}

function readRecord(raw: Buffer): TokenRecord | undefined {
  try {
    const r = JSON.parse(raw.toString('utf8')) as Partial<TokenRecord>;
    if (r.v !== 1 || typeof r.hash !== 'string' || typeof r.expires !== 'string') return undefined;
    if (Number.isNaN(Date.parse(r.expires))) return undefined;
    return r as TokenRecord;
  } catch {
    return undefined;
  }
}

/**
 * Checks the credential `<id>.<secret>` a joining host sent against the
 * token's record: unknown id, wrong secret or an unreadable record is
 * JoinTokenInvalidError; then used is JoinTokenUsedError, past `expires`
 * JoinTokenExpiredError (only a holder of the secret learns which).
 */
export async function checkToken(kv: Namespace, credential: string, now = Date.now()): Promise<CheckedToken> {
  const m = CREDENTIAL_RE.exec(credential);
  if (!m) throw new JoinTokenInvalidError('the credential is not <id>.<secret> of a join token');
  const [, id, secret] = m as unknown as [string, string, string];
  const res = await kv.get(tokenKey(id)).exec();
  const raw = res.kvs[0]?.value;
  if (!raw) throw new JoinTokenInvalidError(`the fabric knows no token ${id} (never made, or expired long ago)`);
  const record = readRecord(raw);
  if (!record) throw new JoinTokenInvalidError(`the record of token ${id} is unreadable`);
  const a = Buffer.from(record.hash);
  const b = Buffer.from(sha256hex(secret));
  if (a.length !== b.length || !timingSafeEqual(a, b))
    throw new JoinTokenInvalidError(`the secret of token ${id} does not match`);
  if (record.used !== undefined) throw new JoinTokenUsedError(id, record.host ?? '?', record.used);
  if (Date.parse(record.expires) <= now) throw new JoinTokenExpiredError(id, record.expires);
  return { id, raw, rejoin: record.rejoin };
}

/** What the consuming transaction also requires and writes. */
export interface ConsumeGuard {
  /** Keys that must still be at these modification revisions ('0': absent). */
  unchanged: { key: string; modRevision: string }[];
  /** Keys written with the token's consumption. */
  puts: { key: string; value: string }[];
}

/**
 * Consumes a checked token in one transaction: its record still has the
 * bytes that were checked (else the token was used or expired meanwhile, and
 * checkToken() says which) and every `guard.unchanged` key is unchanged; then
 * the record becomes a tombstone naming `host` and `guard.puts` are written.
 * Resolves false when only a guarded key changed (the token stays valid).
 */
export async function consumeToken(
  kv: Namespace,
  checked: CheckedToken,
  credential: string,
  host: string,
  guard: ConsumeGuard,
): Promise<boolean> {
  const key = tokenKey(checked.id);
  const record = readRecord(checked.raw) as TokenRecord;
  const tomb: TokenRecord = { ...record, used: new Date().toISOString(), host };
  const txn = kv.if(key, 'Value', '==', checked.raw);
  for (const u of guard.unchanged) txn.and(u.key, 'Mod', '==', Number(u.modRevision));
  const r = await txn
    .then(kv.put(key).value(JSON.stringify(tomb)).ignoreLease(), ...guard.puts.map((p) => kv.put(p.key).value(p.value)))
    .commit();
  if (r.succeeded) return true;
  const again = await checkToken(kv, credential);
  if (!again.raw.equals(checked.raw)) throw new JoinTokenInvalidError(`token ${checked.id} changed while it was used`);
  return false;
}

/** A token as `vmlink cluster token --list` shows it (never its secret). */
export interface TokenInfo {
  id: string;
  created: string;
  expires: string;
  /** The host whose key it may replace, if any. */
  rejoin?: string;
  /** When and by which host it was used, if it was. */
  used?: { at: string; host: string };
}

/** The tokens whose records are still stored (live, and expired or used ones within their afterlife), by id. */
export async function listTokens(kv: Namespace): Promise<TokenInfo[]> {
  const all = await kv.getAll().prefix('tokens/').buffers();
  const out: TokenInfo[] = [];
  for (const [key, raw] of Object.entries(all)) {
    const r = readRecord(raw);
    if (!r) continue;
    out.push({
      id: key.slice('tokens/'.length),
      created: r.created,
      expires: r.expires,
      ...(r.rejoin !== undefined ? { rejoin: r.rejoin } : {}),
      ...(r.used !== undefined ? { used: { at: r.used, host: r.host ?? '?' } } : {}),
    });
  }
  return out.sort((a, b) => a.id.localeCompare(b.id));
}

/** Deletes token `id` before its time (`vmlink cluster token --delete ID`); false when there was none. */
export async function revokeToken(kv: Namespace, id: string): Promise<boolean> {
  if (!/^[a-z2-7]{8}$/.test(id)) throw new JoinBadRequestError(`"${id}" is not a token id (8 of a-z2-7)`);
  const r = await kv.delete().key(tokenKey(id)).exec();
  return Number(r.deleted) > 0;
}

/**
 * Local validation of command-line values, so a typo is reported before the
 * daemon is asked (exit 2), with the flag and the value named.
 */

import { VmlinkError } from '../errors.js';
import { type Address, parseAddress } from '../util/address.js';
import { isGroupMac, parseMac } from '../util/mac.js';

/** A bad or missing command-line argument: printed with a usage hint, exit status 2. */
export class UsageError extends VmlinkError {
  override readonly status = 400;
  constructor(message: string) {
    super('ERR_USAGE', message);
  }
}

/** An integer option in [min, max]: `--vni "abc" is not an integer 1-16777215`. */
export function intArg(flag: string, text: string, min: number, max: number): number {
  const n = /^\d{1,16}$/.test(text.trim()) ? Number(text.trim()) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`${flag} "${text}" is not an integer ${min}-${max}`);
  }
  return n;
}

/** A positive decimal number up to max. */
export function numberArg(flag: string, text: string, max: number): number {
  const n = /^\d+(\.\d+)?$/.test(text.trim()) ? Number(text.trim()) : Number.NaN;
  if (!(n > 0 && n <= max)) throw new UsageError(`${flag} "${text}" is not a number above 0 and at most ${max}`);
  return n;
}

/** A transport address of one of the allowed types; returns the text as given (the daemon parses it again). */
export function addressArg(flag: string, text: string, allowed: readonly Address['type'][]): string {
  const a = parseAddress(text, allowed);
  if (typeof a === 'string') throw new UsageError(`${flag} ${a}`);
  return text;
}

/** Host, network and port names (config/schema.ts): 1-32 letters, digits, `_`, `.`, `-`, not starting with the last three. */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;

/** A host id (`host.id` of a config); a bad one is a usage error (exit 2). */
export function hostIdArg(text: string): string {
  if (!NAME_RE.test(text)) {
    throw new UsageError(`"${text}" is not a host id: 1-32 letters, digits, '_', '.', '-' (not first)`);
  }
  return text;
}

/** A unicast MAC address. */
export function macArg(flag: string, text: string): string {
  const m = parseMac(text);
  if (m === undefined || isGroupMac(m)) {
    throw new UsageError(`${flag} "${text}" is not a unicast MAC address like 52:54:00:12:34:56`);
  }
  return text;
}

/** One of a fixed set of words. */
export function choiceArg<T extends string>(flag: string, text: string, choices: readonly T[]): T {
  if (!(choices as readonly string[]).includes(text)) {
    throw new UsageError(`${flag} "${text}" is not one of: ${choices.join(', ')}`);
  }
  return text as T;
}

/** `10=lab,20=dmz` -> `{ "10": "lab", "20": "dmz" }` (802.1Q VLAN ids 1-4094). */
export function trunkArg(flag: string, text: string): Record<string, string> {
  const vlans: Record<string, string> = {};
  for (const item of text.split(',')) {
    const m = /^\s*(\d+)\s*=\s*(\S+)\s*$/.exec(item);
    if (!m) throw new UsageError(`${flag} "${text}": "${item}" is not VID=NETWORK (e.g. --trunk 10=lab,20=dmz)`);
    const vid = String(intArg(`${flag} VLAN id`, m[1] as string, 1, 4094));
    if (vid in vlans) throw new UsageError(`${flag} "${text}": VLAN ${vid} is given twice`);
    vlans[vid] = m[2] as string;
  }
  return vlans;
}

/** `PPS` or `PPS/BURST` storm control; the burst defaults to one second's worth of frames. */
export function stormArg(flag: string, text: string): { pps: number; burst: number } {
  const [ppsText, burstText, extra] = text.split('/');
  if (extra !== undefined || ppsText === undefined) {
    throw new UsageError(`${flag} "${text}" is not PPS or PPS/BURST (e.g. --storm 1000/200)`);
  }
  const pps = numberArg(flag, ppsText, 1e9);
  const burst =
    burstText === undefined ? Math.min(1e6, Math.max(1, Math.ceil(pps))) : intArg(`${flag} burst`, burstText, 1, 1e6);
  return { pps, burst };
}

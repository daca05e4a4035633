/** Conversions between config/API port specs and what the switch and messages need. */
import { readFileSync } from 'node:fs';
import type { PortConfig } from '../config/schema.js';
import type { PortBinding } from '../net/switch/switch.js';
import { formatAddress } from '../util/address.js';
import { parseMac } from '../util/mac.js';

/** The switch's binding for a port spec: MAC strings become numbers. */
export function portBinding(spec: PortConfig): PortBinding {
  return {
    network: spec.network,
    trunk: spec.trunk && { vlans: spec.trunk.vlans, native: spec.trunk.native },
    allowedMacs: spec.allowed_macs?.map((m) => parseMac(m) as number),
    maxMacs: spec.max_macs,
    storm: spec.storm,
  };
}

/** A parsed spec back in the text form of the config (addresses as `unix:/path`). */
export function rawOf(spec: PortConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(spec)) {
    out[k] =
      typeof v === 'object' && v !== null && 'type' in v ? formatAddress(v as Parameters<typeof formatAddress>[0]) : v;
  }
  return out;
}

/** The address (or interface) a port binds or dials, for messages. */
export function addressOf(spec: PortConfig): string {
  const raw = rawOf(spec);
  for (const key of ['listen', 'connect', 'local', 'ifname']) if (typeof raw[key] === 'string') return raw[key];
  return `its ${spec.kind} transport`;
}

/** The version in package.json, found by walking up from this module (src/ or dist/src/). */
export function packageVersion(): string {
  for (let url = new URL('.', import.meta.url); url.pathname !== '/'; url = new URL('..', url)) {
    try {
      const pkg = JSON.parse(readFileSync(new URL('package.json', url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'vmlink' && pkg.version) return pkg.version;
    } catch {
      // not here: look one directory up
    }
  }
  return '0.0.0';
}

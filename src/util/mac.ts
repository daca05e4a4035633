/**
 * MAC addresses as numbers (48 bits fit a double exactly) and as text:
 * parsing and formatting shared by config, the CLI and the switch.
 */

/** True when the number `mac` is a group address. */
export function isGroupMac(mac: number): boolean {
  return Math.floor(mac / 0x100_0000_0000) % 2 === 1;
}

/** `52:54:00:12:34:56` for a MAC number. */
export function formatMac(mac: number): string {
  let s = '';
  for (let shift = 40; shift >= 0; shift -= 8) {
    const octet = Math.floor(mac / 2 ** shift) % 256;
    s += (shift === 40 ? '' : ':') + octet.toString(16).padStart(2, '0');
  }
  return s;
}

const MAC_RE = /^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})$/i;

/** Parses `aa:bb:cc:dd:ee:ff` (or with dashes); returns undefined when it is not a MAC. */
export function parseMac(text: string): number | undefined {
  const m = MAC_RE.exec(text.trim());
  if (!m) return undefined;
  let mac = 0;
  for (let i = 1; i <= 6; i++) mac = mac * 256 + Number.parseInt(m[i] as string, 16);
  return mac;
}

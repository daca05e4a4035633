/**
 * The flow of an inner Ethernet frame for the VXLAN source port (RFC 7348
 * §5: "it is recommended that the UDP source port number be calculated
 * using a hash of fields from the inner packet", so that underlay ECMP and
 * receive-side scaling keep one flow on one path and spread many flows).
 *
 * Hashed: IPv4 and IPv6 addresses with the TCP/UDP/SCTP ports (not for IPv4
 * fragments, whose later pieces carry no ports), the addresses alone for
 * other IP protocols, and the two MAC addresses for anything else; one
 * 802.1Q tag is looked through. Every frame of one TCP connection in one
 * direction hashes alike. Reads only bytes inside `[off, off+len)`; nothing
 * is allocated.
 */

const ETH_HLEN = 14;
const ETHERTYPE_VLAN = 0x8100;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_IPV6 = 0x86dd;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const IPPROTO_SCTP = 132;

/** One 32-bit mixing round (murmur3's). */
function mix(h: number, k: number): number {
  let x = Math.imul(k, 0xcc9e2d51);
  x = (x << 15) | (x >>> 17);
  x = Math.imul(x, 0x1b873593);
  const y = h ^ x;
  return (Math.imul((y << 13) | (y >>> 19), 5) + 0xe6546b64) | 0;
}

/** murmur3's finaliser: every input bit reaches every output bit. */
function fmix(h: number): number {
  let x = h ^ (h >>> 16);
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

const hasPorts = (proto: number): boolean => proto === IPPROTO_TCP || proto === IPPROTO_UDP || proto === IPPROTO_SCTP;

/** A 32-bit hash of the flow of the Ethernet frame at `buf[off .. off+len)` (see the module comment). */
export function flowHash(buf: Buffer, off: number, len: number): number {
  if (len < ETH_HLEN) return 0;
  const end = off + len;
  let l3 = off + ETH_HLEN;
  let type = buf.readUInt16BE(off + 12);
  if (type === ETHERTYPE_VLAN && l3 + 4 <= end) {
    type = buf.readUInt16BE(l3 + 2);
    l3 += 4;
  }
  let h = 0x9747b28c;
  if (type === ETHERTYPE_IPV4 && l3 + 20 <= end) {
    const ihl = ((buf[l3] as number) & 0x0f) * 4;
    const proto = buf[l3 + 9] as number;
    h = mix(mix(mix(h, buf.readUInt32BE(l3 + 12)), buf.readUInt32BE(l3 + 16)), proto);
    // More fragments or a fragment offset: no ports (later fragments lack them).
    const frag = buf.readUInt16BE(l3 + 6) & 0x3fff;
    if (frag === 0 && ihl >= 20 && hasPorts(proto) && l3 + ihl + 4 <= end) h = mix(h, buf.readUInt32BE(l3 + ihl));
    return fmix(h);
  }
  if (type === ETHERTYPE_IPV6 && l3 + 40 <= end) {
    for (let i = 8; i < 40; i += 4) h = mix(h, buf.readUInt32BE(l3 + i));
    const next = buf[l3 + 6] as number;
    h = mix(h, next);
    if (hasPorts(next) && l3 + 44 <= end) h = mix(h, buf.readUInt32BE(l3 + 40));
    return fmix(h);
  }
  h = mix(mix(mix(h, buf.readUInt32BE(off)), buf.readUInt32BE(off + 4)), buf.readUInt32BE(off + 8));
  return fmix(mix(h, type));
}

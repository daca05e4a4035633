/**
 * ARP suppression: an ARP request from a local port for a guest address the
 * control plane knows (`Switch.setArpProxy`) is answered by the switch, back
 * to the asking port only, instead of being flooded (in a cluster: across
 * every host). Requests it should not answer are flooded as before: probes
 * (sender address 0.0.0.0, RFC 5227), gratuitous ARP (sender = target
 * address, a guest announcing itself), a guest asking for its own address,
 * and anything from an overlay link.
 *
 * Per network, a Map from the IPv4 address (as a signed 32-bit integer: a
 * small integer key, no boxing) to the MAC. The batch loop asks only for
 * broadcast frames of networks that have entries; the reply is written into
 * one preallocated buffer.
 */
import { isIPv4 } from 'node:net';
import { IpAddressError } from '../errors.js';
import { ARP_LEN, ARP_REQUEST, arpOp, arpSenderIp, arpSenderMac, arpTargetIp, writeArp } from '../frame/arp.js';
import { ETH_HLEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, etherType, u16, writeEthHeader } from '../frame/ethernet.js';
import type { Egress } from './egress.js';
import { locationMac } from './locations.js';
import type { Network } from './network.js';
import type { SwitchPort } from './switch-port.js';

const ARP_REPLY = 2;
/** Shortest Ethernet frame without FCS: the reply is padded to it. */
const MIN_FRAME = 60;

/** The IPv4 address `text` as an unsigned 32-bit number; throws {@link IpAddressError} for anything else. */
export function ipv4Number(text: string): number {
  if (!isIPv4(text)) throw new IpAddressError(text);
  return text.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}

export class ArpProxy {
  /** Requests answered, since start. */
  answered = 0;
  readonly #reply = Buffer.alloc(MIN_FRAME);

  constructor(readonly egress: Egress) {}

  /**
   * Sets (or with `mac` undefined removes) the MAC of guest address `ip` in
   * `net`. Throws for an address or MAC that is not one; false when the
   * network already has `max` entries.
   */
  set(net: Network, ip: string, mac: string | undefined, max: number): boolean {
    const key = ipv4Number(ip) | 0;
    if (mac === undefined) {
      net.arp?.delete(key);
      if (net.arp?.size === 0) net.arp = undefined;
      return true;
    }
    const m = locationMac(mac);
    const arp = net.arp ?? new Map<number, number>();
    if (!arp.has(key) && arp.size >= max) return false;
    arp.set(key, m);
    net.arp = arp;
    return true;
  }

  /**
   * Answers the broadcast frame `buf[off .. off+len)` from `sp` in `net` when
   * it is an ARP request it should answer (see the module note): the reply
   * goes to `sp`, and true says the request is not to be flooded.
   */
  answer(sp: SwitchPort, net: Network, buf: Buffer, off: number, len: number): boolean {
    const arp = net.arp;
    if (arp === undefined || !sp.local || len < ETH_HLEN + ARP_LEN || etherType(buf, off) !== ETHERTYPE_ARP)
      return false;
    const l3 = off + ETH_HLEN;
    if (u16(buf, l3) !== 1 || u16(buf, l3 + 2) !== ETHERTYPE_IPV4 || buf[l3 + 4] !== 6 || buf[l3 + 5] !== 4)
      return false;
    if (arpOp(buf, l3) !== ARP_REQUEST) return false;
    const spa = arpSenderIp(buf, l3);
    const tpa = arpTargetIp(buf, l3);
    if (spa === 0 || spa === tpa) return false;
    const mac = arp.get(tpa | 0);
    if (mac === undefined) return false;
    const sha = arpSenderMac(buf, l3);
    if (mac === sha) return false;
    const r = this.#reply;
    writeEthHeader(r, 0, sha, mac, ETHERTYPE_ARP);
    writeArp(r, ETH_HLEN, ARP_REPLY, mac, tpa, sha, spa);
    this.egress.output(sp, sp.vidOf(net), r, 0, MIN_FRAME, undefined);
    this.answered++;
    return true;
  }
}

/** The TAP offloads asked of the kernel (TUNSETOFFLOAD) and their names in `describe()`. */

/** TUNSETOFFLOAD bits (linux/if_tun.h); USO4/6 arrived in Linux 6.2, so older headers lack them. */
const TUN_F_CSUM = 0x01;
const TUN_F_TSO4 = 0x02;
const TUN_F_TSO6 = 0x04;
const TUN_F_TSO_ECN = 0x08;
const TUN_F_USO4 = 0x20;
const TUN_F_USO6 = 0x40;
/** Offload sets asked for in turn until the kernel accepts one (EINVAL: it does not know a bit). */
export const OFFLOAD_TRIES = [
  TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6,
  TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN,
  TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
  TUN_F_CSUM,
  0,
] as const;
const OFFLOAD_NAMES: [number, string][] = [
  [TUN_F_CSUM, 'csum'],
  [TUN_F_TSO4, 'tso4'],
  [TUN_F_TSO6, 'tso6'],
  [TUN_F_TSO_ECN, 'tso_ecn'],
  [TUN_F_USO4, 'uso4'],
  [TUN_F_USO6, 'uso6'],
];

/** `csum,tso4,...` for the offload bits the kernel accepted; `off` for none. */
export function offloadNames(bits: number): string {
  if (bits === 0) return 'off';
  return OFFLOAD_NAMES.filter(([bit]) => bits & bit)
    .map(([, name]) => name)
    .join(',');
}

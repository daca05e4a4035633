/**
 * Numbers of the vhost-user protocol (QEMU docs/interop/vhost-user.rst) and
 * of virtio-net (virtio 1.2 §2.7 split virtqueues, §5.1 network device).
 */

/** Front-end -> back-end requests ("Front-end message types"). */
export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
} as const;

/** Request names for log lines. */
export const REQ_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Req).map(([k, v]) => [v, k]));

/** Header: request u32, flags u32, size u32 (host byte order, little-endian here). */
export const HDR_LEN = 12;
/** Largest payload we accept; the biggest message we know (SET_MEM_TABLE, 8 regions) is 264 bytes. */
export const MAX_PAYLOAD = 4096;
/** flags: protocol version in bits 0-1. */
export const VERSION = 0x1;
export const FLAG_VERSION_MASK = 0x3;
/** flags bit 2: this is a reply. */
export const FLAG_REPLY = 1 << 2;
/** flags bit 3: the front-end wants a REPLY_ACK. */
export const FLAG_NEED_REPLY = 1 << 3;

/** Most regions in SET_MEM_TABLE (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_REGIONS = 8;
/** SET_VRING_KICK/CALL/ERR payload: bits 0-7 ring index, bit 8 "no fd" (polling mode / invalid). */
export const VRING_IDX_MASK = 0xff;
export const VRING_NOFD_MASK = 1 << 8;
/** SET_VRING_ADDR flags bit 0: log used-ring writes at log_guest_addr. */
export const VRING_F_LOG = 1;

/** Protocol feature bits (GET_PROTOCOL_FEATURES). */
export const ProtoF = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
} as const;

/** Device feature bits (GET_FEATURES). */
export const F = {
  /** virtio-net: device handles packets with partial checksum (offloads: net-offload.ts). */
  NET_CSUM: 0,
  NET_GUEST_CSUM: 1,
  NET_MTU: 3,
  NET_MRG_RXBUF: 15,
  NET_STATUS: 16,
  NET_GUEST_ANNOUNCE: 21,
  NET_MQ: 22,
  NOTIFY_ON_EMPTY: 24,
  /** VHOST_F_LOG_ALL: the front-end is migrating; log every write to guest memory. */
  LOG_ALL: 26,
  RING_INDIRECT_DESC: 28,
  RING_EVENT_IDX: 29,
  /** VHOST_USER_F_PROTOCOL_FEATURES: without it QEMU 7.2 silently falls back (the NIC stays dead). */
  PROTOCOL_FEATURES: 30,
  VERSION_1: 32,
} as const;

/** 2**bit as a number (bits up to 52 are exact; features are < 64 but we use < 40). */
export const bit = (b: number): number => 2 ** b;
/** True when bit b is set in a feature number. */
export const has = (features: number, b: number): boolean => Math.floor(features / 2 ** b) % 2 === 1;

/** virtq_desc flags (virtio 1.2 §2.7.5). */
export const DESC_F_NEXT = 1;
export const DESC_F_WRITE = 2;
export const DESC_F_INDIRECT = 4;
/** virtq_avail flags: the driver does not want interrupts. */
export const AVAIL_F_NO_INTERRUPT = 1;
/** Largest queue size in a split virtqueue (virtio 1.2 §2.7). */
export const MAX_QUEUE_SIZE = 32768;

/** virtio_net_hdr_v1 (VERSION_1 or MRG_RXBUF): 12 bytes, num_buffers at offset 10. */
export const NET_HDR_LEN = 12;
/** Queue pairs we serve (GET_QUEUE_NUM, with the MQ protocol feature). */
export const MAX_QUEUE_PAIRS = 8;
/** Rings we accept: a receive and a transmit ring per queue pair (QEMU keeps the control queue itself). */
export const MAX_RINGS = 2 * MAX_QUEUE_PAIRS;

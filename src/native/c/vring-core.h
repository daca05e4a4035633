/*
 * The pure part of the split-virtqueue fast path (vring.c): ring state,
 * address translation and the transmit / receive walks over guest memory.
 * No Node-API here, so the fuzz harnesses (fuzz/) compile it alone.
 *
 * Everything in guest memory is peer input: the available index and ring,
 * the descriptors and the buffers' addresses and lengths. Each is checked
 * before use (see vring.c for the contract with virtqueue.ts).
 */
#ifndef VMLINK_VRING_CORE_H
#define VMLINK_VRING_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VL_MAX_REGIONS 8
#define VL_NET_HDR 12
#define VL_DESC_F_NEXT 1
#define VL_DESC_F_WRITE 2
/* io[2] bit: mergeable receive buffers (VIRTIO_NET_F_MRG_RXBUF): a frame may fill several chains. */
#define VL_IO_MRG 1
/* Most receive chains one frame fills on the fast path (a 64 KiB frame in 1 KiB buffers); more go to the walk. */
#define VL_MRG_MAX 80

/* Results of vl_rx_one. */
#define VL_RX_OK 0
#define VL_RX_EMPTY 1
#define VL_RX_SLOW 2

typedef struct {
  uint8_t *base;
  uint64_t gpa;
  /* Bytes mapped at base (the region's size, never more than the mapping holds). */
  uint64_t size;
} vl_region_t;

typedef struct {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
} vl_desc_t;

typedef struct {
  vl_region_t r[VL_MAX_REGIONS];
  uint32_t nr;
  uint32_t num;
  uint8_t *desc;
  uint8_t *avail; /* flags, idx, ring[num], used_event */
  uint8_t *used;  /* flags, idx, ring[num] of {id, len}, avail_event */
  /*
   * io[0] = next available slot (free-running u16), io[1] = next used slot: shared with the Virtqueue object;
   * io[2] (when io has 3 elements) = receive flags: VL_IO_MRG (the guest negotiated MRG_RXBUF).
   */
  uint32_t *io;
  size_t io_len;
  bool attached;
} vl_vring_t;

/* Whether guest-physical [gpa, gpa+len) lies inside one region: the first such region and the offset in it. */
bool vl_gpa_find(const vl_vring_t *q, uint64_t gpa, uint32_t len, uint32_t *region, uint64_t *off);

/* Pointer to guest-physical [gpa, gpa+len) when it lies inside one region, else NULL. */
uint8_t *vl_gpa_ptr(const vl_vring_t *q, uint64_t gpa, uint32_t len, uint32_t *region, uint64_t *off);

/* Available entries not yet taken, or -1 when the index ran more than a queue size ahead. */
int32_t vl_avail_count(const vl_vring_t *q);

/*
 * Takes up to `max` simple transmit chains (see vring.c, vringTx) whose frame is
 * min_len..max_len bytes; frame k goes to out[3k..3k+2] (region, offset, length),
 * out holding out_len elements. `*taken` counts as it goes (so a caller that
 * stops it half-way knows how far it got).
 */
void vl_vring_tx(vl_vring_t *q, uint32_t max, uint32_t min_len, uint32_t max_len, uint32_t *out, size_t out_len,
                 volatile int32_t *taken);

/*
 * One frame into the receive ring, used elements written but not published
 * (see vring.c, vringRx). *avail: the available chains not yet taken as
 * last read (-2: not read yet). Nothing in the ring state changes before
 * every byte is copied.
 */
int32_t vl_rx_one(vl_vring_t *q, const uint8_t *src, uint32_t len, int32_t *avail);

/* Stores the used index (after the used elements), with a full barrier (virtio 1.2 §2.7.8.2). */
void vl_publish(vl_vring_t *q);

#endif

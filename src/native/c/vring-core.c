/*
 * The walks of vring.c over guest memory, without Node-API (vring-core.h).
 * Descriptors are copied out once before they are checked (the guest may
 * change them meanwhile); the available index is read with one 16-bit load.
 */
#include "vring-core.h"

#include <string.h>

bool vl_gpa_find(const vl_vring_t *q, uint64_t gpa, uint32_t len, uint32_t *region, uint64_t *off) {
  for (uint32_t i = 0; i < q->nr; i++) {
    const vl_region_t *r = &q->r[i];
    if (gpa < r->gpa) continue;
    uint64_t o = gpa - r->gpa; /* no wrap-around: gpa >= r->gpa */
    if (o > r->size || len > r->size - o) continue;
    *region = i;
    *off = o;
    return true;
  }
  return false;
}

uint8_t *vl_gpa_ptr(const vl_vring_t *q, uint64_t gpa, uint32_t len, uint32_t *region, uint64_t *off) {
  return vl_gpa_find(q, gpa, len, region, off) ? q->r[*region].base + *off : NULL;
}

static uint16_t load16(const uint8_t *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE); }

int32_t vl_avail_count(const vl_vring_t *q) {
  uint16_t idx = load16(q->avail + 2);
  uint32_t n = (uint16_t)(idx - (uint16_t)q->io[0]);
  return n > q->num ? -1 : (int32_t)n;
}

/* A transmitted virtio_net_hdr that asks for no offload (no NEEDS_CSUM, gso_type NONE): the frame goes on without metadata. */
static bool plain_hdr(const uint8_t *h) { return (h[0] & 1) == 0 && h[1] == 0; }

static void read_desc(const vl_vring_t *q, uint32_t i, vl_desc_t *d) {
  memcpy(d, q->desc + 16 * (size_t)i, sizeof *d);
}

static void push_used(vl_vring_t *q, uint32_t head, uint32_t len) {
  uint32_t slot = q->io[1] % q->num;
  uint32_t e[2] = {head, len};
  memcpy(q->used + 4 + 8 * (size_t)slot, e, 8);
  q->io[1] = (q->io[1] + 1) & 0xffff;
}

void vl_publish(vl_vring_t *q) { __atomic_store_n((uint16_t *)(q->used + 2), (uint16_t)q->io[1], __ATOMIC_SEQ_CST); }

void vl_vring_tx(vl_vring_t *q, uint32_t max, uint32_t min_len, uint32_t max_len, uint32_t *out, size_t out_len,
                 volatile int32_t *taken) {
  *taken = 0;
  if (!q->attached) return;
  int32_t n = vl_avail_count(q);
  /* An index more than a queue size ahead: take nothing, the walk's availCount() reports it. (Found by fuzz/vring-tx.c:
   * -1 once passed the clamp below as a huge size_t and let the call take chains the walk refuses.) */
  if (n <= 0) return;
  if (n > (int32_t)max) n = (int32_t)max;
  if ((size_t)n > out_len / 3) n = (int32_t)(out_len / 3);
  for (int32_t k = 0; k < n; k++) {
    uint32_t slot = q->io[0] % q->num;
    uint16_t head;
    memcpy(&head, q->avail + 4 + 2 * (size_t)slot, 2);
    if (head >= q->num) return;
    vl_desc_t d;
    read_desc(q, head, &d);
    uint32_t region;
    uint64_t off;
    uint32_t flen;
    if (d.flags == 0) {
      if (d.len < VL_NET_HDR + min_len || d.len - VL_NET_HDR > max_len) return;
      const uint8_t *h = vl_gpa_ptr(q, d.addr, d.len, &region, &off);
      if (!h || !plain_hdr(h)) return;
      off += VL_NET_HDR;
      flen = d.len - VL_NET_HDR;
    } else if (d.flags == VL_DESC_F_NEXT && d.len == VL_NET_HDR && d.next < q->num) {
      vl_desc_t f;
      read_desc(q, d.next, &f);
      if (f.flags != 0 || f.len < min_len || f.len > max_len) return;
      const uint8_t *h = vl_gpa_ptr(q, d.addr, d.len, &region, &off);
      if (!h || !plain_hdr(h)) return;
      if (!vl_gpa_ptr(q, f.addr, f.len, &region, &off)) return;
      flen = f.len;
    } else {
      return;
    }
    out[3 * k] = region;
    out[3 * k + 1] = (uint32_t)off;
    out[3 * k + 2] = flen;
    q->io[0] = (q->io[0] + 1) & 0xffff;
    push_used(q, head, 0);
    *taken = k + 1;
  }
}

int32_t vl_rx_one(vl_vring_t *q, const uint8_t *src, uint32_t len, int32_t *avail) {
  if (!q->attached) return VL_RX_SLOW;
  int32_t n = *avail;
  if (n < VL_MRG_MAX) n = *avail = vl_avail_count(q);
  if (n == 0) return VL_RX_EMPTY;
  if (n < 0) return VL_RX_SLOW;
  bool mrg = q->io_len > 2 && (q->io[2] & VL_IO_MRG) != 0;
  uint64_t need = VL_NET_HDR + (uint64_t)len;
  uint8_t *ptr[VL_MRG_MAX];
  uint32_t cap[VL_MRG_MAX];
  uint16_t heads[VL_MRG_MAX];
  uint64_t have = 0;
  uint32_t h = 0;
  while (have < need) {
    if (h == (uint32_t)n) {
      /* Every buffer the guest can post is too small: the walk drops and counts it. */
      return mrg && (uint32_t)n < q->num ? VL_RX_EMPTY : VL_RX_SLOW;
    }
    if (h == VL_MRG_MAX || (h == 1 && !mrg)) return VL_RX_SLOW;
    uint16_t head;
    memcpy(&head, q->avail + 4 + 2 * (size_t)((q->io[0] + h) % q->num), 2);
    if (head >= q->num) return VL_RX_SLOW;
    vl_desc_t d;
    read_desc(q, head, &d);
    uint32_t region;
    uint64_t goff;
    if (d.flags != VL_DESC_F_WRITE || d.len == 0 || (ptr[h] = vl_gpa_ptr(q, d.addr, d.len, &region, &goff)) == NULL)
      return VL_RX_SLOW;
    cap[h] = d.len;
    heads[h] = head;
    have += d.len;
    h++;
  }
  uint8_t hdr[VL_NET_HDR] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (uint8_t)h, (uint8_t)(h >> 8)};
  if (h == 1) {
    /* The common case: one buffer; the header's size is known, so its copy is inlined. */
    memcpy(ptr[0], hdr, VL_NET_HDR);
    memcpy(ptr[0] + VL_NET_HDR, src, len);
    push_used(q, heads[0], (uint32_t)need);
    q->io[0] = (q->io[0] + 1) & 0xffff;
    *avail = n - 1;
    return VL_RX_OK;
  }
  /* Header then frame, across the chains in order; the used elements after every byte is in place. */
  const uint8_t *from = hdr;
  uint32_t from_left = VL_NET_HDR;
  bool in_hdr = true;
  uint64_t left = need;
  for (uint32_t k = 0; k < h; k++) {
    uint32_t w = left < cap[k] ? (uint32_t)left : cap[k];
    uint8_t *to = ptr[k];
    uint32_t room = w;
    while (room > 0) {
      uint32_t c = from_left < room ? from_left : room;
      memcpy(to, from, c);
      to += c;
      room -= c;
      from += c;
      from_left -= c;
      if (from_left == 0 && in_hdr) {
        in_hdr = false;
        from = src;
        from_left = len;
      }
    }
    cap[k] = w;
    left -= w;
  }
  for (uint32_t k = 0; k < h; k++) push_used(q, heads[k], cap[k]);
  q->io[0] = (q->io[0] + h) & 0xffff;
  *avail = n - (int32_t)h;
  return VL_RX_OK;
}

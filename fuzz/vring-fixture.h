/*
 * A ring in fuzzed guest memory for the vring harnesses: up to three
 * regions (each its own allocation of exactly its size, so AddressSanitizer
 * reports any byte touched outside them) at fuzzed guest-physical addresses,
 * and the three ring parts, also exactly sized, as vringAttach would give
 * them. Descriptors point anywhere the input says; the ring state indexes
 * start where the input says.
 */
#ifndef VMLINK_VRING_FIXTURE_H
#define VMLINK_VRING_FIXTURE_H

#include <stdlib.h>

#include "fuzz-input.h"
#include "vring-core.h"

typedef struct {
  vl_vring_t q;
  uint32_t io[3];
} fixture;

/* Region sizes the input picks from (small ones make near-boundary descriptors likely). */
static const uint32_t fx_sizes[] = {1, 12, 64, 100, 4096, 8192, 65536};

static inline void fx_init(fixture *f, fz_in *in) {
  memset(f, 0, sizeof *f);
  vl_vring_t *q = &f->q;
  q->num = 1u << (fz_u8(in) % 9); /* 1 .. 256 */
  q->nr = 1 + fz_u8(in) % 3;
  for (uint32_t i = 0; i < q->nr; i++) {
    uint64_t size = fx_sizes[fz_u8(in) % (sizeof fx_sizes / sizeof fx_sizes[0])];
    q->r[i].size = size;
    q->r[i].gpa = fz_u8(in) & 1 ? fz_u64(in) : (uint64_t)i << 20; /* sometimes anywhere, up to 2^64-1 */
    q->r[i].base = malloc(size);
  }
  f->io[0] = fz_u16(in);
  f->io[1] = fz_u16(in);
  f->io[2] = fz_u8(in) & 1;
  q->io = f->io;
  q->io_len = 3;
  q->desc = malloc(16 * (size_t)q->num);
  q->avail = malloc(6 + 2 * (size_t)q->num);
  q->used = malloc(6 + 8 * (size_t)q->num);
  /* The rest of the input is the guest's: descriptors, available ring, region bytes. */
  fz_fill(in, q->desc, 16 * (size_t)q->num);
  fz_fill(in, q->avail, 6 + 2 * (size_t)q->num);
  memset(q->used, 0, 6 + 8 * (size_t)q->num);
  for (uint32_t i = 0; i < q->nr; i++) fz_fill(in, q->r[i].base, q->r[i].size);
  /*
   * Random 64-bit addresses seldom land in a region: when the descriptor's
   * flags byte says so, its address becomes a region's start plus an offset
   * near or past its end, so the walks meet real buffers and their edges.
   */
  for (uint32_t i = 0; i < q->num; i++) {
    uint8_t *d = q->desc + 16 * (size_t)i;
    if ((d[13] & 0x80) == 0) continue;
    uint64_t a;
    memcpy(&a, d, 8);
    const vl_region_t *r = &q->r[(a >> 32) % q->nr];
    a = r->gpa + (uint32_t)a % (r->size + 32);
    memcpy(d, &a, 8);
    d[13] &= 0x7f;
  }
  q->attached = true;
}

static inline void fx_free(fixture *f) {
  vl_vring_t *q = &f->q;
  for (uint32_t i = 0; i < q->nr; i++) free(q->r[i].base);
  free(q->desc);
  free(q->avail);
  free(q->used);
}

/* Whether [off, off+len) of region r lies inside it. */
static inline int fx_inside(const vl_vring_t *q, uint32_t r, uint64_t off, uint64_t len) {
  return r < q->nr && off <= q->r[r].size && len <= q->r[r].size - off;
}

#endif

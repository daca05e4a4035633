/*
 * Reading a fuzz input as a stream of integers: every harness takes its
 * parameters from the front of the input and what is left as bytes (guest
 * memory, a frame). An exhausted input reads as zeros.
 */
#ifndef VMLINK_FUZZ_INPUT_H
#define VMLINK_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
  const uint8_t *p;
  size_t left;
} fz_in;

static inline uint64_t fz_take(fz_in *in, size_t bytes) {
  uint64_t v = 0;
  size_t n = bytes < in->left ? bytes : in->left;
  memcpy(&v, in->p, n);
  in->p += n;
  in->left -= n;
  return v;
}

static inline uint8_t fz_u8(fz_in *in) { return (uint8_t)fz_take(in, 1); }
static inline uint16_t fz_u16(fz_in *in) { return (uint16_t)fz_take(in, 2); }
static inline uint32_t fz_u32(fz_in *in) { return (uint32_t)fz_take(in, 4); }
static inline uint64_t fz_u64(fz_in *in) { return fz_take(in, 8); }

/* Fills dst with the rest of the input, repeated (zeros when there is none left). */
static inline void fz_fill(fz_in *in, uint8_t *dst, size_t len) {
  if (in->left == 0) {
    memset(dst, 0, len);
    return;
  }
  for (size_t o = 0; o < len; o += in->left) memcpy(dst + o, in->p, len - o < in->left ? len - o : in->left);
}

#endif

/*
 * libFuzzer harness: the Internet checksum of csum.c (src/native/c/inet-sum.h)
 * over peer bytes at any alignment and length, against RFC 1071's plain
 * 16-bit big-endian loop.
 */
#include <assert.h>
#include <stdlib.h>

#include "inet-sum.h"

static uint32_t reference(const uint8_t *p, size_t n) {
  uint64_t s = 0;
  for (size_t i = 0; i + 1 < n; i += 2) s += (uint32_t)(p[i] << 8 | p[i + 1]);
  if (n & 1) s += (uint32_t)p[n - 1] << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return (uint32_t)s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  size_t skip = data[0] % 8; /* any alignment */
  if (skip > size - 1) skip = size - 1;
  size_t n = size - 1 - skip;
  uint8_t *copy = malloc(n ? n : 1); /* exact size: a read past the end is reported */
  memcpy(copy, data + 1 + skip, n);
  assert(vl_inet_sum(copy, n) == reference(copy, n));
  free(copy);
  return 0;
}

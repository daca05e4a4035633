/*
 * The Internet checksum (RFC 1071) of csum.c, apart so the fuzz harnesses
 * (fuzz/) compile it without Node-API.
 */
#ifndef VMLINK_INET_SUM_H
#define VMLINK_INET_SUM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * The ones'-complement sum of the big-endian 16-bit words of p[0 .. n) (an
 * odd last byte padded with zero), folded to 1..0xffff, or 0 when every word
 * is 0. Words are added in host order, 8 bytes at a time, and the folded sum
 * byte-swapped at the end (RFC 1071 §2(B): the sum is independent of byte
 * order). n at most 2^31 (each turn adds at most 2^33).
 */
static inline uint32_t vl_inet_sum(const uint8_t *p, size_t n) {
  uint64_t s = 0;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    s += (w & 0xffffffffu) + (w >> 32);
  }
  for (; n >= 2; p += 2, n -= 2) {
    uint16_t w;
    memcpy(&w, p, 2);
    s += w;
  }
  if (n) { /* the odd last byte is the high byte of a big-endian word */
    uint16_t w = 0;
    memcpy(&w, p, 1);
    s += w;
  }
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  uint32_t folded = (uint32_t)s;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  folded = ((folded & 0xff) << 8) | (folded >> 8);
#endif
  return folded;
}

#endif

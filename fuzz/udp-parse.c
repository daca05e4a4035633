/*
 * libFuzzer harness: what udp-batch.c reads from a received message
 * (src/native/c/udp-parse.h): the sender record from a socket address of
 * any family and length, and the UDP_GRO segment size from a control buffer
 * of arbitrary bytes (the CMSG walk must stay inside it).
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>

#include "fuzz-input.h"
#include "udp-parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  struct sockaddr_storage from;
  socklen_t al = fz_u8(&in) % (sizeof from + 1);
  memset(&from, 0, sizeof from);
  size_t take = al < in.left ? al : in.left;
  memcpy(&from, in.p, take);
  in.p += take;
  in.left -= take;
  uint8_t rec[UB_ADDR + 1];
  rec[UB_ADDR] = 0x5c;
  put_sender(rec, &from, al);
  assert(rec[UB_ADDR] == 0x5c && rec[19] == 0);
  assert(rec[18] == 0 || rec[18] == 4 || rec[18] == 6);

  /* The control buffer: the rest of the input, in an allocation of exactly its size (malloc aligns it as the kernel's). */
  size_t clen = in.left;
  void *ctrl = malloc(clen ? clen : 1);
  memcpy(ctrl, in.p, clen);
  struct msghdr h;
  memset(&h, 0, sizeof h);
  h.msg_control = clen ? ctrl : NULL;
  h.msg_controllen = clen;
  volatile uint32_t gso = gro_size(&h); /* volatile: a result nobody reads would let the compiler drop the call */
  assert(gso <= INT32_MAX);
  free(ctrl);
  return 0;
}

/*
 * libFuzzer harness: the transmit walk of the vring fast path
 * (src/native/c/vring-core.c, vl_vring_tx) over a guest ring and memory the
 * input describes. Checks, besides what the sanitizers catch: no more frames
 * than asked or available, every frame inside one region and within the
 * length limits, and the indexes advanced by exactly the frames taken.
 */
#include <assert.h>

#include "vring-fixture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  uint32_t max = fz_u16(&in) % 300;
  uint32_t min_len = fz_u16(&in) % 2000;
  uint32_t max_len = fz_u16(&in) % 70000;
  uint32_t out_n = fz_u8(&in) % 5 == 0 ? (uint32_t)(fz_u8(&in) % 40) : 3 * 256;
  fixture f;
  fx_init(&f, &in);
  vl_vring_t *q = &f.q;
  uint32_t *out = malloc(sizeof(uint32_t) * (out_n ? out_n : 1));
  uint32_t io0 = f.io[0], io1 = f.io[1];
  int32_t avail = vl_avail_count(q);
  volatile int32_t taken = -7;
  vl_vring_tx(q, max, min_len, max_len, out, out_n, &taken);
  assert(taken >= 0 && (uint32_t)taken <= max && (uint32_t)taken <= out_n / 3);
  assert(avail >= 0 ? taken <= avail : taken == 0);
  for (int32_t k = 0; k < taken; k++) {
    uint32_t r = out[3 * k], off = out[3 * k + 1], len = out[3 * k + 2];
    assert(fx_inside(q, r, off, len));
    assert(len >= min_len && len <= max_len);
  }
  assert(f.io[0] == ((io0 + (uint32_t)taken) & 0xffff));
  assert(f.io[1] == ((io1 + (uint32_t)taken) & 0xffff));
  vl_publish(q);
  free(out);
  fx_free(&f);
  return 0;
}

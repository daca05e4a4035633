/*
 * libFuzzer harness: the receive copy of the vring fast path
 * (src/native/c/vring-core.c, vl_rx_one), with and without mergeable
 * buffers, for a few frames in a row. Checks, besides what the sanitizers
 * catch (every region, ring part and the frame are exact allocations): a
 * frame done adds used elements whose lengths sum to header + frame, each
 * naming an available head below the queue size; a frame not done changes
 * no index.
 */
#include <assert.h>

#include "vring-fixture.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  uint32_t frames = 1 + fz_u8(&in) % 4;
  uint32_t lens[4];
  for (uint32_t i = 0; i < 4; i++) lens[i] = fz_u16(&in) % 9000;
  fixture f;
  fx_init(&f, &in);
  vl_vring_t *q = &f.q;
  int32_t avail = -2;
  for (uint32_t i = 0; i < frames; i++) {
    uint8_t *src = malloc(lens[i] ? lens[i] : 1);
    memset(src, 0xab, lens[i]);
    uint32_t io0 = f.io[0], io1 = f.io[1];
    int32_t res = vl_rx_one(q, src, lens[i], &avail);
    assert(res == VL_RX_OK || res == VL_RX_EMPTY || res == VL_RX_SLOW);
    if (res != VL_RX_OK) {
      assert(f.io[0] == io0 && f.io[1] == io1);
      free(src);
      break;
    }
    uint32_t used = (f.io[1] - io1) & 0xffff;
    assert(used >= 1 && used <= VL_MRG_MAX && used <= q->num);
    assert(f.io[0] == ((io0 + used) & 0xffff));
    assert(used == 1 || (f.io[2] & VL_IO_MRG));
    uint64_t sum = 0;
    for (uint32_t k = 0; k < used; k++) {
      uint32_t e[2];
      memcpy(e, q->used + 4 + 8 * (size_t)((io1 + k) % q->num), 8);
      assert(e[0] < q->num);
      sum += e[1];
    }
    assert(sum == 12 + (uint64_t)lens[i]);
    free(src);
  }
  vl_publish(q);
  fx_free(&f);
  return 0;
}

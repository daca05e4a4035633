/*
 * libFuzzer harness: guest-physical address translation
 * (src/native/c/vring-core.c, vl_gpa_find) for regions anywhere in the 64-bit
 * space, against a reference computed in 128-bit arithmetic: a translation
 * succeeds exactly when the range lies inside some region, and then inside
 * the first such region it names.
 */
#include <assert.h>

#include "fuzz-input.h"
#include "vring-core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  vl_vring_t q;
  memset(&q, 0, sizeof q);
  q.nr = fz_u8(&in) % (VL_MAX_REGIONS + 1);
  for (uint32_t i = 0; i < q.nr; i++) {
    q.r[i].gpa = fz_u64(&in);
    q.r[i].size = fz_u8(&in) & 1 ? fz_u64(&in) : fz_u32(&in);
  }
  while (in.left > 0) {
    uint64_t gpa = fz_u64(&in);
    uint32_t len = fz_u32(&in);
    int want = -1;
    for (uint32_t i = 0; i < q.nr && want < 0; i++) {
      unsigned __int128 start = q.r[i].gpa, end = start + q.r[i].size;
      if (gpa >= start && (unsigned __int128)gpa + len <= end) want = (int)i;
    }
    uint32_t region = 99;
    uint64_t off = 0;
    bool found = vl_gpa_find(&q, gpa, len, &region, &off);
    if (want < 0) {
      assert(!found);
    } else {
      assert(found && region == (uint32_t)want);
      assert(off == gpa - q.r[want].gpa && off <= q.r[want].size && len <= q.r[want].size - off);
    }
  }
  return 0;
}

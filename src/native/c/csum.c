/*
 * The Internet checksum (RFC 1071) over a Buffer range in C: the sum that
 * src/net/offload/checksum.ts computes in JavaScript, about ten times faster
 * over a full-size frame (the segmenter and the VXLAN receive path sum every
 * payload byte once).
 */
#include "common.h"
#include "inet-sum.h"

/*
 * inetSum(buf, from, to) -> the ones'-complement sum of the big-endian
 * 16-bit words of buf[from .. to) (an odd last byte padded with zero),
 * folded to 1..0xffff, or 0 when every word is 0. Words are added in host
 * order, 8 bytes at a time, and the folded sum byte-swapped at the end
 * (RFC 1071 §2(B): the sum is independent of byte order).
 */
static napi_value inet_sum(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  uint8_t *buf;
  size_t len;
  uint32_t from, to;
  if (!vl_get_bytes(env, argv[0], "buf", &buf, &len) || !vl_get_uint32(env, argv[1], "from", &from) ||
      !vl_get_uint32(env, argv[2], "to", &to))
    return NULL;
  if (from > to || to > len) return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "from <= to <= buf.length is required");
  uint32_t folded = vl_inet_sum(buf + from, to - from);
  napi_value res;
  NAPI_CALL(env, napi_create_uint32(env, folded, &res));
  return res;
}

napi_status vl_init_csum(napi_env env, napi_value exports) { return vl_export(env, exports, "inetSum", inet_sum); }

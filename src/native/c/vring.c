/*
 * The fast path of a split virtqueue (virtio 1.2 §2.7) over mmapped guest
 * memory: one call moves a batch of transmitted frames or one received frame,
 * instead of a dozen JavaScript reads per descriptor.
 *
 * It takes only the common, simple case: a transmit chain of one descriptor
 * (header + frame) or two (a header-sized descriptor, then the frame), a
 * receive chain of one device-writable descriptor big enough for header and
 * frame, or with mergeable buffers several such chains filled in order.
 * Everything else (indirect tables, longer chains, bad indexes,
 * addresses outside memory, wrong directions, odd lengths) makes it stop
 * BEFORE taking that head, and the TypeScript walk (virtqueue.ts) takes the
 * same head and refuses or accepts it with its own checks and messages. So the
 * validation semantics are those of virtqueue.ts: this code never accepts what
 * the TypeScript refuses (every address and index is checked here too).
 *
 * Ring indexes the driver changes (available index) are read with one 16-bit
 * volatile load; descriptors are copied out once before they are checked (the
 * guest may change them meanwhile). The used index is stored with a full
 * barrier after the used elements (§2.7.8.2); transmit leaves publishing to
 * the caller, which first hands the frames (still in guest memory) on.
 *
 * The walks themselves live in vring-core.c (no Node-API: the fuzz harnesses
 * build it alone); each call here runs its walk under the SIGBUS guard
 * (guard.h): one sigsetjmp per batch call, and a front-end that shrank its
 * memory file makes the call stop (-1 from vringTx, the frames done so far
 * from vringRxBatch) instead of killing the process. vringRx (one frame a
 * call) has no sigsetjmp: a fault there completes on the guard's zero page.
 */
#include "common.h"
#include "guard.h"
#include "vring-core.h"

#include <stdlib.h>
#include <string.h>

static void vring_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static bool get_vring(napi_env env, napi_value v, vl_vring_t **out) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "the \"ring\" argument must be a handle from vringNew()");
    return false;
  }
  *out = p;
  return true;
}

/* vringNew(io: Uint32Array(>=2)) -> handle. `io` holds the ring's two indexes (and flags); keep it alive with the handle. */
static napi_value vring_new(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  uint32_t *io;
  size_t n;
  if (!vl_get_u32s(env, argv[0], "io", false, &io, &n)) return NULL;
  if (n < 2) return vl_throw_arg(env, "ERR_INVALID_ARG_VALUE", "io must hold at least 2 elements");
  vl_vring_t *q = calloc(1, sizeof *q);
  if (!q) return vl_throw_errno(env, ENOMEM, "calloc", NULL);
  q->io = io;
  q->io_len = n;
  napi_value h;
  if (napi_create_external(env, q, vring_finalize, NULL, &h) != napi_ok) {
    free(q);
    vl_throw_napi(env, "napi_create_external");
    return NULL;
  }
  return h;
}

/*
 * vringAttach(ring, regions: Buffer[], gpas: Float64Array, num, desc, avail, used)
 * Points the ring at guest memory: region views with their guest-physical
 * starts, and the three ring parts as Buffers (already bounds-checked by the
 * caller). vringAttach(ring) with no regions detaches. Call again before the
 * memory is unmapped.
 */
static napi_value vring_attach(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 7);
  vl_vring_t *q;
  if (!get_vring(env, argv[0], &q)) return NULL;
  q->attached = false;
  if (vl_is_nullish(env, argv[1])) return NULL;
  uint32_t nr = 0;
  NAPI_CALL(env, napi_get_array_length(env, argv[1], &nr));
  if (nr == 0 || nr > VL_MAX_REGIONS) return vl_throw_arg(env, "ERR_INVALID_ARG_VALUE", "1 to 8 regions");
  void *gp = NULL;
  size_t glen = 0;
  napi_typedarray_type t;
  if (napi_get_typedarray_info(env, argv[2], &t, &glen, &gp, NULL, NULL) != napi_ok || t != napi_float64_array ||
      glen < nr)
    return vl_throw_arg(env, "ERR_INVALID_ARG_TYPE", "gpas must be a Float64Array with one start per region");
  for (uint32_t i = 0; i < nr; i++) {
    napi_value v;
    NAPI_CALL(env, napi_get_element(env, argv[1], i, &v));
    size_t len;
    if (!vl_get_bytes(env, v, "region", &q->r[i].base, &len)) return NULL;
    q->r[i].size = len;
    q->r[i].gpa = (uint64_t)((double *)gp)[i];
  }
  uint32_t num;
  if (!vl_get_uint32(env, argv[3], "num", &num)) return NULL;
  size_t dl, al, ul;
  if (!vl_get_bytes(env, argv[4], "desc", &q->desc, &dl) || !vl_get_bytes(env, argv[5], "avail", &q->avail, &al) ||
      !vl_get_bytes(env, argv[6], "used", &q->used, &ul))
    return NULL;
  if (num == 0 || num > 32768 || dl < 16 * (size_t)num || al < 6 + 2 * (size_t)num || ul < 6 + 8 * (size_t)num)
    return vl_throw_arg(env, "ERR_INVALID_ARG_VALUE", "ring parts smaller than the queue size needs");
  q->nr = nr;
  q->num = num;
  q->attached = true;
  return NULL;
}

/*
 * Argument readers for the per-frame calls: one N-API call each (the generic
 * readers of common.h make two or three); a wrong type still throws.
 */
static bool fast_u32(napi_env env, napi_value v, const char *name, uint32_t *out) {
  if (napi_get_value_uint32(env, v, out) == napi_ok) return true;
  return vl_get_uint32(env, v, name, out);
}

static bool fast_bytes(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len) {
  napi_typedarray_type t;
  void *p = NULL;
  if (napi_get_typedarray_info(env, v, &t, len, &p, NULL, NULL) == napi_ok && t == napi_uint8_array) {
    *data = p;
    return true;
  }
  return vl_get_bytes(env, v, name, data, len);
}

/*
 * vringTx(ring, max, minLen, maxLen, out: Uint32Array) -> frames taken
 * Takes up to `max` simple transmit chains whose frame (header excluded) is
 * minLen..maxLen bytes and whose header asks for no offload; for frame k, out[3k..3k+2] = region, offset of the
 * frame in that region, length. Used elements are written (length 0), not
 * published. Stops before the first chain it does not take. -1: the
 * front-end's memory faulted (it shrank the file under a ring or buffer);
 * disconnect it.
 */
static napi_value vring_tx(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 5);
  vl_vring_t *q;
  uint32_t max, min_len, max_len, *out;
  size_t out_len;
  if (!get_vring(env, argv[0], &q) || !vl_get_uint32(env, argv[1], "max", &max) ||
      !vl_get_uint32(env, argv[2], "minLen", &min_len) || !vl_get_uint32(env, argv[3], "maxLen", &max_len) ||
      !vl_get_u32s(env, argv[4], "out", false, &out, &out_len))
    return NULL;
  volatile int32_t taken = 0;
  if (q->attached) {
    VL_GUARD_BEGIN(fault);
    vl_vring_tx(q, max, min_len, max_len, out, out_len, &taken);
    VL_GUARD_END();
  }
  if (0) {
  fault:
    taken = -1;
  }
  napi_value r;
  NAPI_CALL(env, napi_create_int32(env, taken, &r));
  return r;
}

/*
 * vringRx(ring, buf, off, len) -> VL_RX_*
 * Copies a 12-byte header (all zero but num_buffers) and buf[off, off+len)
 * into the next receive chain when it is one device-writable descriptor with
 * room for both (with MRG_RXBUF: into as many such chains as needed), writes
 * the used elements and publishes them. EMPTY: not enough buffers. SLOW: the
 * next chains (or the ring state) need the TypeScript path. A call per
 * frame, so not guarded by a sigsetjmp of its own: a guest-memory fault in it
 * completes on the zero page the guard maps (guard.h) and is reported
 * through the guard's eventfd.
 */
static int32_t rx_one(vl_vring_t *q, const uint8_t *src, uint32_t len) {
  int32_t avail = -2;
  int32_t res = vl_rx_one(q, src, len, &avail);
  if (res == VL_RX_OK) vl_publish(q);
  return res;
}

static napi_value vring_rx(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 4);
  vl_vring_t *q;
  uint8_t *buf;
  size_t blen;
  uint32_t off, len;
  if (!get_vring(env, argv[0], &q) || !fast_bytes(env, argv[1], "buf", &buf, &blen) ||
      !fast_u32(env, argv[2], "off", &off) || !fast_u32(env, argv[3], "len", &len))
    return NULL;
  if ((size_t)off + len > blen) return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "off + len beyond the buffer");
  napi_value r;
  NAPI_CALL(env, napi_create_int32(env, rx_one(q, buf + off, len), &r));
  return r;
}

/*
 * vringRxBatch(ring, src: Buffer, frames: Uint32Array, count) -> frames done
 * Like vringRx for frames[2k] = offset, frames[2k+1] = length in `src`,
 * k < count, in order; the used index is published once at the end. Stops
 * at the first frame that is not OK (the caller takes it), or that faulted in
 * guest memory (the fault is reported through guard.h). The source is an
 * argument of each call: no state is kept between calls, so no port ever
 * copies from a buffer another port set.
 */
static napi_value vring_rx_batch(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 4);
  vl_vring_t *q;
  uint8_t *src;
  size_t slen;
  uint32_t *fr, count;
  size_t flen;
  if (!get_vring(env, argv[0], &q) || !fast_bytes(env, argv[1], "src", &src, &slen) ||
      !vl_get_u32s(env, argv[2], "frames", false, &fr, &flen) || !fast_u32(env, argv[3], "count", &count))
    return NULL;
  if ((size_t)count * 2 > flen) return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "count beyond the frames array");
  volatile uint32_t done = 0;
  int32_t avail = -2; /* read once, then counted down: the guest's index is a contended cache line */
  for (uint32_t k = 0; k < count; k++)
    if ((size_t)fr[2 * k] + fr[2 * k + 1] > slen)
      return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "off + len beyond the source buffer");
  VL_GUARD_BEGIN(fault);
  for (uint32_t k = 0; k < count; k++) {
    if (vl_rx_one(q, src + fr[2 * k], fr[2 * k + 1], &avail) != VL_RX_OK) break;
    done = k + 1;
  }
  if (done > 0) vl_publish(q);
  VL_GUARD_END();
  if (0) {
  fault:
    /* The frames before the faulting one are complete: publish them (the used elements of that one are not written). */
    if (done > 0) vl_publish(q);
  }
  napi_value r;
  NAPI_CALL(env, napi_create_uint32(env, done, &r));
  return r;
}

/* vringPublish(ring): stores the used index (after the used elements vringTx wrote). */
static napi_value vring_publish(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  vl_vring_t *q;
  if (!get_vring(env, argv[0], &q)) return NULL;
  if (q->attached) vl_publish(q);
  return NULL;
}

napi_status vl_init_vring(napi_env env, napi_value exports) {
  napi_status s;
  if ((s = vl_export(env, exports, "vringNew", vring_new)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "vringAttach", vring_attach)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "vringTx", vring_tx)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "vringRx", vring_rx)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "vringRxBatch", vring_rx_batch)) != napi_ok) return s;
  return vl_export(env, exports, "vringPublish", vring_publish);
}

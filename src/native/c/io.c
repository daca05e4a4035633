/*
 * Batched frame I/O on a non-blocking fd that carries one frame per read or
 * write (a TAP): many frames per N-API call, no allocation per frame. And
 * one gathered write on a stream socket (links).
 */
#include "common.h"

#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/*
 * readBatch(fd, buf, maxLen, offs: Uint32Array, lens: Uint32Array) -> n
 * Reads frames until the fd would block, `offs.length` frames were read, or
 * fewer than `maxLen` bytes of `buf` remain. Frames are packed: frame i is at
 * buf[offs[i] .. offs[i]+lens[i]), each start 8-byte aligned. Returns the
 * count (0 when nothing was ready), or -1 at end of file. Throws only for an
 * error on the first read (a later error recurs on the next call).
 */
static napi_value read_batch(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 5);
  int32_t fd;
  uint32_t max_len;
  uint8_t *buf;
  size_t buf_len, n_offs, n_lens;
  uint32_t *offs, *lens;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_bytes(env, argv[1], "buf", &buf, &buf_len) ||
      !vl_get_uint32(env, argv[2], "maxLen", &max_len) || !vl_get_u32s(env, argv[3], "offs", false, &offs, &n_offs) ||
      !vl_get_u32s(env, argv[4], "lens", false, &lens, &n_lens))
    return NULL;
  if (max_len == 0 || buf_len < max_len)
    return vl_throw_arg(env, "ERR_INVALID_ARG_VALUE", "buf must hold at least maxLen bytes, and maxLen must be > 0");
  size_t max = n_offs < n_lens ? n_offs : n_lens;
  size_t cur = 0;
  int32_t n = 0;
  while ((size_t)n < max && cur <= buf_len && buf_len - cur >= max_len) {
    ssize_t r = read(fd, buf + cur, max_len);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK || n > 0) break;
      return vl_throw_errno(env, errno, "read", NULL);
    }
    if (r == 0) {
      if (n == 0) n = -1;
      break;
    }
    offs[n] = (uint32_t)cur;
    lens[n] = (uint32_t)r;
    n++;
    cur += ((size_t)r + 7) & ~(size_t)7;
  }
  napi_value res;
  NAPI_CALL(env, napi_create_int32(env, n, &res));
  return res;
}

/*
 * writeBatch(fd, buf, offs, lens, start, end, prefix: Buffer|null, errs: Int32Array) -> next
 * Writes frames start..end-1, one writev each (prefix, frame): a TAP takes one
 * frame per write. Stops when the fd would block and returns the index of the
 * first frame not consumed (end when all were). A frame the kernel refuses
 * with another error is skipped: errs[0] counts those, errs[1] holds the last errno.
 */
static napi_value write_batch(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 8);
  int32_t fd;
  uint32_t start, end;
  uint8_t *buf, *prefix = NULL;
  size_t buf_len, prefix_len = 0, n_offs, n_lens, n_errs;
  uint32_t *offs, *lens, *errs;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_bytes(env, argv[1], "buf", &buf, &buf_len) ||
      !vl_get_u32s(env, argv[2], "offs", false, &offs, &n_offs) ||
      !vl_get_u32s(env, argv[3], "lens", false, &lens, &n_lens) || !vl_get_uint32(env, argv[4], "start", &start) ||
      !vl_get_uint32(env, argv[5], "end", &end))
    return NULL;
  if (!vl_is_nullish(env, argv[6]) && !vl_get_bytes(env, argv[6], "prefix", &prefix, &prefix_len)) return NULL;
  if (!vl_get_u32s(env, argv[7], "errs", true, &errs, &n_errs)) return NULL;
  if (end > n_offs || end > n_lens || start > end || n_errs < 2)
    return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "start/end must lie within offs and lens; errs needs 2 elements");
  struct iovec iov[2];
  iov[0].iov_base = prefix;
  iov[0].iov_len = prefix_len;
  int first = prefix_len ? 0 : 1;
  uint32_t i = start;
  for (; i < end; i++) {
    if ((uint64_t)offs[i] + lens[i] > buf_len)
      return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "a frame lies outside buf (offs[i] + lens[i] > buf.length)");
    iov[1].iov_base = buf + offs[i];
    iov[1].iov_len = lens[i];
    ssize_t r;
    do r = writev(fd, iov + first, 2 - first);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      ((int32_t *)errs)[0]++;
      ((int32_t *)errs)[1] = errno;
    }
  }
  napi_value res;
  NAPI_CALL(env, napi_create_uint32(env, i, &res));
  return res;
}

/*
 * streamWrite(fd, a, aOff, aLen, b, bOff, bLen) -> bytes
 * One writev of a[aOff .. aOff+aLen) then b[bOff .. bOff+bLen) on a
 * non-blocking stream socket (a link: a record header, then a frame straight
 * from where it was read). Returns the bytes written (possibly fewer than
 * asked, 0 when the socket would block), or -errno for another error: the
 * caller hands the rest to the socket's own queue, which reports errors.
 */
static napi_value stream_write(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 7);
  int32_t fd;
  uint8_t *a, *b;
  size_t a_len, b_len;
  uint32_t a_off, a_n, b_off, b_n;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_bytes(env, argv[1], "a", &a, &a_len) ||
      !vl_get_uint32(env, argv[2], "aOff", &a_off) || !vl_get_uint32(env, argv[3], "aLen", &a_n) ||
      !vl_get_bytes(env, argv[4], "b", &b, &b_len) || !vl_get_uint32(env, argv[5], "bOff", &b_off) ||
      !vl_get_uint32(env, argv[6], "bLen", &b_n))
    return NULL;
  if ((uint64_t)a_off + a_n > a_len || (uint64_t)b_off + b_n > b_len)
    return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "a range lies outside its buffer (off + len > length)");
  struct iovec iov[2] = {{.iov_base = a + a_off, .iov_len = a_n}, {.iov_base = b + b_off, .iov_len = b_n}};
  ssize_t r;
  do r = writev(fd, iov, 2);
  while (r < 0 && errno == EINTR);
  double res_v = r >= 0 ? (double)r : (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -(double)errno;
  napi_value res;
  NAPI_CALL(env, napi_create_double(env, res_v, &res));
  return res;
}

napi_status vl_init_io(napi_env env, napi_value exports) {
  napi_status s;
  if ((s = vl_export(env, exports, "readBatch", read_batch)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "streamWrite", stream_write)) != napi_ok) return s;
  return vl_export(env, exports, "writeBatch", write_batch);
}

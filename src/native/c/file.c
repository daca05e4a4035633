/*
 * Block-file calls Node lacks: reads and writes that never block on the disk
 * (RWF_NOWAIT, so a request served from the page cache skips the thread
 * pool), hole punching and zeroing (fallocate) and finding data and holes
 * (lseek SEEK_DATA / SEEK_HOLE).
 */
#include "common.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <uv.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

/* A Float64Array argument: its elements (as raw words; cast to double). */
static bool get_f64s(napi_env env, napi_value v, const char *name, uint32_t **data, size_t *len) {
  bool is_ta;
  napi_typedarray_type type;
  void *d;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, v, &type, len, &d, NULL, NULL) != napi_ok || type != napi_float64_array) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a Float64Array", name);
    vl_throw_arg(env, "ERR_INVALID_ARG_TYPE", msg);
    return false;
  }
  *data = d;
  return true;
}

/* Reads fd, buf, off, len, pos into C values; pos must be a whole number >= 0. */
static bool get_rw_args(napi_env env, napi_value *argv, int32_t *fd, uint8_t **buf, uint32_t *off, uint32_t *len,
                        off_t *pos) {
  size_t buf_len;
  double p;
  if (!vl_get_int32(env, argv[0], "fd", fd) || !vl_get_bytes(env, argv[1], "buf", buf, &buf_len) ||
      !vl_get_uint32(env, argv[2], "offset", off) || !vl_get_uint32(env, argv[3], "length", len) ||
      !vl_get_double(env, argv[4], "position", &p))
    return false;
  if ((uint64_t)*off + *len > buf_len) {
    vl_throw_arg(env, "ERR_OUT_OF_RANGE", "offset + length must lie within buf");
    return false;
  }
  if (!(p >= 0 && p <= 9007199254740991.0) || p != (double)(int64_t)p) {
    vl_throw_arg(env, "ERR_OUT_OF_RANGE", "position must be a whole number from 0 to 2^53-1");
    return false;
  }
  *pos = (off_t)p;
  return true;
}

/*
 * One preadv2/pwritev2 with RWF_NOWAIT. Returns the bytes moved (may be short:
 * the part that was cached), -1 when nothing could be done without waiting
 * (EAGAIN), -2 when the file system does not support RWF_NOWAIT for this call
 * (EOPNOTSUPP, EINVAL); throws for other errors.
 */
static napi_value rw_nowait(napi_env env, napi_callback_info info, bool write) {
  GET_ARGS(env, info, 5);
  int32_t fd;
  uint8_t *buf;
  uint32_t off, len;
  off_t pos;
  if (!get_rw_args(env, argv, &fd, &buf, &off, &len, &pos)) return NULL;
  struct iovec iov = {.iov_base = buf + off, .iov_len = len};
  ssize_t r;
  do r = write ? pwritev2(fd, &iov, 1, pos, RWF_NOWAIT) : preadv2(fd, &iov, 1, pos, RWF_NOWAIT);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) r = -1;
    else if (errno == EOPNOTSUPP || errno == EINVAL || errno == ENOSYS) r = -2;
    else return vl_throw_errno(env, errno, write ? "pwritev2" : "preadv2", NULL);
  }
  napi_value res;
  NAPI_CALL(env, napi_create_double(env, (double)r, &res));
  return res;
}

/* preadNoWait(fd, buf, offset, length, position) -> bytes | -1 (not cached) | -2 (unsupported) */
static napi_value pread_nowait(napi_env env, napi_callback_info info) {
  return rw_nowait(env, info, false);
}

/* pwriteNoWait(fd, buf, offset, length, position) -> bytes | -1 (would block) | -2 (unsupported) */
static napi_value pwrite_nowait(napi_env env, napi_callback_info info) {
  return rw_nowait(env, info, true);
}

/* Reads a byte position/length argument (a whole number 0..2^53-1). */
static bool get_pos(napi_env env, napi_value v, const char *name, off_t *out) {
  double d;
  if (!vl_get_double(env, v, name, &d)) return false;
  if (!(d >= 0 && d <= 9007199254740991.0) || d != (double)(int64_t)d) {
    vl_throw_arg(env, "ERR_OUT_OF_RANGE", "offsets and lengths must be whole numbers from 0 to 2^53-1");
    return false;
  }
  *out = (off_t)d;
  return true;
}

/* fallocate(fd, mode, offset, length): mode is FALLOC_FL_* bits (exported below). Throws on failure. */
static napi_value fallocate_(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 4);
  int32_t fd, mode;
  off_t off, len;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_int32(env, argv[1], "mode", &mode) ||
      !get_pos(env, argv[2], "offset", &off) || !get_pos(env, argv[3], "length", &len))
    return NULL;
  int r;
  do r = fallocate(fd, mode, off, len);
  while (r < 0 && errno == EINTR);
  if (r < 0) return vl_throw_errno(env, errno, "fallocate", NULL);
  return NULL;
}

/*
 * lseek(fd, offset, SEEK_DATA or SEEK_HOLE) -> position, or -1 when there is
 * no data at or after offset (ENXIO). Throws for other errors (EINVAL when
 * the file system cannot tell).
 */
static napi_value seek(napi_env env, napi_callback_info info, int whence) {
  GET_ARGS(env, info, 2);
  int32_t fd;
  off_t off;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !get_pos(env, argv[1], "offset", &off)) return NULL;
  off_t r = lseek(fd, off, whence);
  if (r < 0 && errno != ENXIO) return vl_throw_errno(env, errno, whence == SEEK_DATA ? "lseek SEEK_DATA" : "lseek SEEK_HOLE", NULL);
  napi_value res;
  NAPI_CALL(env, napi_create_double(env, r < 0 ? -1.0 : (double)r, &res));
  return res;
}

static napi_value seek_data(napi_env env, napi_callback_info info) {
  return seek(env, info, SEEK_DATA);
}

static napi_value seek_hole(napi_env env, napi_callback_info info) {
  return seek(env, info, SEEK_HOLE);
}

/*
 * fileBatch(fd, write, bufs: Buffer[], positions: Float64Array, results: Float64Array, callback)
 * Runs every pread (write false) or pwrite (write true) of the batch in order
 * on one of the addon's own I/O threads, then calls callback() on the loop:
 * one hand-off for all the requests that arrived together instead of one
 * each. results[i] is the bytes moved (a read stops short only at end of
 * file) or -errno. The buffers are held until the callback; do not touch
 * them before it.
 *
 * Why own threads and not napi async work (libuv's pool): creating an async
 * work item (an async resource each) cost about 9 us per call, more than the
 * 4 KiB pwrites it carried. Here a call is a lock and a signal; completions
 * come back through one uv_async_t and run inside a callback scope (so
 * promise jobs run after each, as for any Node callback).
 */
typedef struct {
  uint8_t *buf;
  size_t len;
  off_t pos;
} batch_op;

typedef struct batch {
  struct batch *next;
  napi_ref bufs;
  napi_ref results_ref;
  napi_ref callback;
  int fd;
  bool write;
  uint32_t n;
  double *results;
  batch_op ops[];
} batch_t;

#define IO_THREADS 2

static pthread_mutex_t io_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t io_cv = PTHREAD_COND_INITIALIZER;
static batch_t *io_todo_head, *io_todo_tail, *io_done;
static bool io_started;
static uv_async_t io_async;
static napi_env io_env;
static napi_async_context io_ctx;
/* Batches handed out and not yet called back: the async handle keeps the loop alive only while > 0. */
static uint32_t io_pending;

static void batch_run(batch_t *b) {
  for (uint32_t i = 0; i < b->n; i++) {
    batch_op *op = &b->ops[i];
    size_t done = 0;
    double res = 0;
    while (done < op->len) {
      ssize_t r = b->write ? pwrite(b->fd, op->buf + done, op->len - done, op->pos + (off_t)done)
                           : pread(b->fd, op->buf + done, op->len - done, op->pos + (off_t)done);
      if (r < 0) {
        if (errno == EINTR) continue;
        res = -(double)errno;
        break;
      }
      if (r == 0) break; /* end of file (a read) */
      done += (size_t)r;
    }
    b->results[i] = res < 0 ? res : (double)done;
  }
}

static void *io_thread(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&io_mu);
    while (!io_todo_head) pthread_cond_wait(&io_cv, &io_mu);
    batch_t *b = io_todo_head;
    io_todo_head = b->next;
    if (!io_todo_head) io_todo_tail = NULL;
    pthread_mutex_unlock(&io_mu);
    batch_run(b);
    pthread_mutex_lock(&io_mu);
    b->next = io_done;
    io_done = b;
    pthread_mutex_unlock(&io_mu);
    uv_async_send(&io_async);
  }
  return NULL;
}

/* On the loop: call back every finished batch (oldest first) and free it. */
static void io_completed(uv_async_t *h) {
  (void)h;
  pthread_mutex_lock(&io_mu);
  batch_t *list = io_done;
  io_done = NULL;
  pthread_mutex_unlock(&io_mu);
  batch_t *rev = NULL;
  while (list) {
    batch_t *next = list->next;
    list->next = rev;
    rev = list;
    list = next;
  }
  napi_env env = io_env;
  while (rev) {
    batch_t *b = rev;
    rev = b->next;
    napi_handle_scope scope;
    napi_open_handle_scope(env, &scope);
    napi_value cb, recv, arg;
    if (napi_get_reference_value(env, b->callback, &cb) == napi_ok && cb != NULL) {
      napi_get_global(env, &recv); /* napi_make_callback wants an object as `this` */
      napi_get_boolean(env, true, &arg);
      napi_value ignored;
      if (napi_make_callback(env, io_ctx, recv, cb, 1, &arg, &ignored) == napi_pending_exception) {
        napi_value err;
        napi_get_and_clear_last_exception(env, &err);
        napi_fatal_exception(env, err);
      }
    }
    napi_close_handle_scope(env, scope);
    napi_delete_reference(env, b->callback);
    napi_delete_reference(env, b->bufs);
    napi_delete_reference(env, b->results_ref);
    free(b);
    if (--io_pending == 0) uv_unref((uv_handle_t *)&io_async);
  }
}

static bool io_start(napi_env env) {
  if (io_started) return true;
  uv_loop_t *loop;
  napi_value name;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_async_init(loop, &io_async, io_completed) != 0) return false;
  uv_unref((uv_handle_t *)&io_async);
  if (napi_create_string_utf8(env, "vmlink:fileBatch", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &io_ctx) != napi_ok)
    return false;
  io_env = env;
  for (int i = 0; i < IO_THREADS; i++) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    int r = pthread_create(&t, &attr, io_thread, NULL);
    pthread_attr_destroy(&attr);
    if (r != 0) return i > 0;
  }
  io_started = true;
  return true;
}

static napi_value file_batch(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 6);
  int32_t fd;
  bool write;
  uint32_t n;
  bool is_array;
  size_t n_pos, n_res;
  uint32_t *pos_raw, *res_raw;
  napi_valuetype t;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_bool(env, argv[1], "write", &write)) return NULL;
  NAPI_CALL(env, napi_is_array(env, argv[2], &is_array));
  if (!is_array) return vl_throw_arg(env, "ERR_INVALID_ARG_TYPE", "bufs must be an array of Buffers");
  NAPI_CALL(env, napi_get_array_length(env, argv[2], &n));
  if (!get_f64s(env, argv[3], "positions", &pos_raw, &n_pos) || !get_f64s(env, argv[4], "results", &res_raw, &n_res))
    return NULL;
  NAPI_CALL(env, napi_typeof(env, argv[5], &t));
  if (t != napi_function) return vl_throw_arg(env, "ERR_INVALID_ARG_TYPE", "callback must be a function");
  if (n == 0 || n_pos < n || n_res < n)
    return vl_throw_arg(env, "ERR_OUT_OF_RANGE",
                        "bufs must not be empty; positions and results need one element per buffer");
  if (!io_start(env)) return vl_throw_errno(env, errno ? errno : EAGAIN, "fileBatch threads", NULL);
  double *positions = (double *)pos_raw;
  batch_t *b = calloc(1, sizeof(batch_t) + n * sizeof(batch_op));
  if (!b) return vl_throw_errno(env, ENOMEM, "fileBatch", NULL);
  b->fd = fd;
  b->write = write;
  b->n = n;
  b->results = (double *)res_raw;
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    double p = positions[i];
    if (napi_get_element(env, argv[2], i, &v) != napi_ok ||
        !vl_get_bytes(env, v, "bufs[i]", &b->ops[i].buf, &b->ops[i].len)) {
      free(b);
      return NULL;
    }
    if (!(p >= 0 && p <= 9007199254740991.0) || p != (double)(int64_t)p) {
      free(b);
      return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "positions must be whole numbers from 0 to 2^53-1");
    }
    b->ops[i].pos = (off_t)p;
  }
  if (napi_create_reference(env, argv[2], 1, &b->bufs) != napi_ok ||
      napi_create_reference(env, argv[4], 1, &b->results_ref) != napi_ok ||
      napi_create_reference(env, argv[5], 1, &b->callback) != napi_ok) {
    vl_throw_napi(env, "fileBatch");
    return NULL;
  }
  if (io_pending++ == 0) uv_ref((uv_handle_t *)&io_async);
  pthread_mutex_lock(&io_mu);
  if (io_todo_tail) io_todo_tail->next = b;
  else io_todo_head = b;
  io_todo_tail = b;
  pthread_cond_signal(&io_cv);
  pthread_mutex_unlock(&io_mu);
  return NULL;
}

napi_status vl_init_file(napi_env env, napi_value exports) {
  napi_status s;
  if ((s = vl_export(env, exports, "preadNoWait", pread_nowait)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "pwriteNoWait", pwrite_nowait)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "fallocate", fallocate_)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "seekData", seek_data)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "seekHole", seek_hole)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "fileBatch", file_batch)) != napi_ok) return s;
  if ((s = vl_export_int(env, exports, "FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE)) != napi_ok) return s;
  if ((s = vl_export_int(env, exports, "FALLOC_FL_PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE)) != napi_ok) return s;
  return vl_export_int(env, exports, "FALLOC_FL_ZERO_RANGE", FALLOC_FL_ZERO_RANGE);
}

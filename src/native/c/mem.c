/*
 * Shared memory and signalling: mmap of an fd into an ArrayBuffer, memfd,
 * eventfd. vhost-user maps guest memory this way and kicks with eventfds.
 */
#include "common.h"
#include "guard.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* One mapping. Freed by the ArrayBuffer's finalizer, which unmaps unless munmap() did. */
typedef struct {
  void *addr;
  size_t len;
  int slot; /* guard.c slot, -1 when unguarded */
  bool unmapped;
} mapping_t;

static void mapping_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  mapping_t *m = hint;
  if (!m->unmapped) {
    vl_guard_remove(m->slot);
    munmap(m->addr, m->len);
  }
  free(m);
}

/*
 * mmap(fd, length, offset, writable) -> ArrayBuffer
 * MAP_SHARED mapping of fd[offset .. offset+length) (offset page-aligned),
 * PROT_READ plus PROT_WRITE when writable. Unmapped when the ArrayBuffer is
 * collected, or at once by munmap(). The mapping is registered with the
 * SIGBUS guard (guard.h): an access beyond the end of the file (which may
 * shrink later) reads zeros and counts a fault (mmapFaults) instead of
 * killing the process.
 */
static napi_value do_mmap(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 4);
  int32_t fd;
  double length, offset;
  bool writable;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_double(env, argv[1], "length", &length) ||
      !vl_get_double(env, argv[2], "offset", &offset) || !vl_get_bool(env, argv[3], "writable", &writable))
    return NULL;
  if (!(length > 0) || length > 9007199254740991.0 || length != (double)(size_t)length || !(offset >= 0) ||
      offset != (double)(off_t)offset)
    return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "length must be a positive integer and offset a non-negative integer");
  mapping_t *m = calloc(1, sizeof *m);
  if (!m) return vl_throw_errno(env, ENOMEM, "calloc", NULL);
  m->len = (size_t)length;
  m->addr = mmap(NULL, m->len, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, (off_t)offset);
  if (m->addr == MAP_FAILED) {
    int err = errno;
    free(m);
    return vl_throw_errno(env, err, "mmap", NULL);
  }
  m->slot = vl_guard_add(m->addr, m->len, fd);
  napi_value ab;
  if (napi_create_external_arraybuffer(env, m->addr, m->len, mapping_finalize, m, &ab) != napi_ok) {
    vl_guard_remove(m->slot);
    munmap(m->addr, m->len);
    free(m);
    vl_throw_napi(env, "napi_create_external_arraybuffer");
    return NULL;
  }
  /* munmap() finds the mapping through this wrap; the ArrayBuffer's finalizer owns m. */
  NAPI_CALL(env, napi_wrap(env, ab, m, NULL, NULL, NULL));
  return ab;
}

/* The mapping behind an ArrayBuffer from mmap(); NULL with a JS exception pending for anything else. */
static mapping_t *mapping_of(napi_env env, napi_value ab) {
  void *p = NULL;
  if (napi_unwrap(env, ab, &p) != napi_ok || p == NULL) {
    vl_throw_arg(env, "ERR_INVALID_ARG_TYPE", "the \"ab\" argument must be an ArrayBuffer returned by mmap()");
    return NULL;
  }
  return p;
}

/* munmap(ab): unmaps an ArrayBuffer from mmap() now and detaches it (its length becomes 0). Idempotent. */
static napi_value do_munmap(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  mapping_t *m = mapping_of(env, argv[0]);
  if (m == NULL) return NULL;
  if (m->unmapped) return NULL;
  vl_guard_remove(m->slot);
  if (munmap(m->addr, m->len) < 0) return vl_throw_errno(env, errno, "munmap", NULL);
  m->unmapped = true;
  /* Detach last: the finalizer may run (and free m) as a consequence. */
  NAPI_CALL(env, napi_detach_arraybuffer(env, argv[0]));
  return NULL;
}

/* mmapFaults(ab) -> guest-memory faults (accesses beyond the end of the file) in an ArrayBuffer from mmap(); 0 once unmapped. */
static napi_value do_mmap_faults(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  mapping_t *m = mapping_of(env, argv[0]);
  if (m == NULL) return NULL;
  napi_value res;
  NAPI_CALL(env, napi_create_uint32(env, m->unmapped ? 0 : vl_guard_faults(m->slot), &res));
  return res;
}

/* guardFd() -> the eventfd the SIGBUS guard writes at every guest-memory fault (read it with eventfdRead). */
static napi_value guard_fd(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value res;
  NAPI_CALL(env, napi_create_int32(env, vl_guard_fd(), &res));
  return res;
}

/*
 * fdInfo(fd) -> { size, regular, seals }
 * fstat's size and whether the fd is a regular file (memfds and tmpfs or
 * hugetlbfs files are), and fcntl(F_GET_SEALS): the memfd seals, or -1
 * when the file cannot carry seals.
 */
static napi_value fd_info(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int32_t fd;
  if (!vl_get_int32(env, argv[0], "fd", &fd)) return NULL;
  struct stat st;
  if (fstat(fd, &st) < 0) return vl_throw_errno(env, errno, "fstat", NULL);
  int seals = fcntl(fd, F_GET_SEALS);
  napi_value res, v;
  NAPI_CALL(env, napi_create_object(env, &res));
  NAPI_CALL(env, napi_create_double(env, (double)st.st_size, &v));
  NAPI_CALL(env, napi_set_named_property(env, res, "size", v));
  NAPI_CALL(env, napi_get_boolean(env, S_ISREG(st.st_mode), &v));
  NAPI_CALL(env, napi_set_named_property(env, res, "regular", v));
  NAPI_CALL(env, napi_create_int32(env, seals < 0 ? -1 : seals, &v));
  NAPI_CALL(env, napi_set_named_property(env, res, "seals", v));
  return res;
}

/* memfdCreate(name, sealing?) -> fd (close-on-exec): anonymous memory to share by fd; `sealing`: MFD_ALLOW_SEALING. */
static napi_value memfd(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  char name[250];
  bool sealing = false;
  if (!vl_get_string(env, argv[0], "name", name, sizeof name)) return NULL;
  if (!vl_is_nullish(env, argv[1]) && !vl_get_bool(env, argv[1], "sealing", &sealing)) return NULL;
  int fd = memfd_create(name, MFD_CLOEXEC | (sealing ? MFD_ALLOW_SEALING : 0));
  if (fd < 0) return vl_throw_errno(env, errno, "memfd_create", name);
  napi_value res;
  NAPI_CALL(env, napi_create_int32(env, fd, &res));
  return res;
}

/* addSeals(fd, seals): fcntl(F_ADD_SEALS) on a memfd made with sealing (F_SEAL_* bits). */
static napi_value add_seals(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  int32_t fd, seals;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_int32(env, argv[1], "seals", &seals)) return NULL;
  if (fcntl(fd, F_ADD_SEALS, seals) < 0) return vl_throw_errno(env, errno, "fcntl F_ADD_SEALS", NULL);
  return NULL;
}

/* eventfd(initval, semaphore) -> fd, non-blocking and close-on-exec. */
static napi_value efd_create(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  uint32_t initval;
  bool sem;
  if (!vl_get_uint32(env, argv[0], "initval", &initval) || !vl_get_bool(env, argv[1], "semaphore", &sem)) return NULL;
  int fd = eventfd(initval, EFD_NONBLOCK | EFD_CLOEXEC | (sem ? EFD_SEMAPHORE : 0));
  if (fd < 0) return vl_throw_errno(env, errno, "eventfd", NULL);
  napi_value res;
  NAPI_CALL(env, napi_create_int32(env, fd, &res));
  return res;
}

/* eventfdRead(fd) -> counter value (then reset, or decremented by 1 in semaphore mode), or null when it is 0. */
static napi_value efd_read(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int32_t fd;
  if (!vl_get_int32(env, argv[0], "fd", &fd)) return NULL;
  uint64_t v;
  ssize_t r;
  do r = read(fd, &v, sizeof v);
  while (r < 0 && errno == EINTR);
  napi_value res;
  if (r < 0) {
    if (errno != EAGAIN) return vl_throw_errno(env, errno, "read", NULL);
    NAPI_CALL(env, napi_get_null(env, &res));
    return res;
  }
  if (r != sizeof v) return vl_throw_errno(env, EINVAL, "read", NULL);
  NAPI_CALL(env, napi_create_double(env, (double)v, &res));
  return res;
}

/* eventfdWrite(fd, n): adds n (1 .. 2^53-1) to the counter. Returns false when it would overflow (EAGAIN). */
static napi_value efd_write(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  int32_t fd;
  double d;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_double(env, argv[1], "n", &d)) return NULL;
  if (!(d >= 1) || d > 9007199254740991.0 || d != (double)(uint64_t)d)
    return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "n must be an integer from 1 to 2^53-1");
  uint64_t v = (uint64_t)d;
  ssize_t r;
  do r = write(fd, &v, sizeof v);
  while (r < 0 && errno == EINTR);
  if (r < 0 && errno != EAGAIN) return vl_throw_errno(env, errno, "write", NULL);
  napi_value res;
  NAPI_CALL(env, napi_get_boolean(env, r == sizeof v, &res));
  return res;
}

napi_status vl_init_mem(napi_env env, napi_value exports) {
  napi_status s;
  int g = vl_guard_install();
  if (g < 0) {
    vl_throw_errno(env, -g, "sigaction SIGBUS", NULL);
    return napi_pending_exception;
  }
  if ((s = vl_export(env, exports, "mmapFaults", do_mmap_faults)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "guardFd", guard_fd)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "fdInfo", fd_info)) != napi_ok) return s;
  if ((s = vl_export_int(env, exports, "F_SEAL_SHRINK", F_SEAL_SHRINK)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "mmap", do_mmap)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "munmap", do_munmap)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "memfdCreate", memfd)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "addSeals", add_seals)) != napi_ok) return s;
  if ((s = vl_export_int(env, exports, "F_SEAL_GROW", F_SEAL_GROW)) != napi_ok) return s;
  if ((s = vl_export_int(env, exports, "F_SEAL_SEAL", F_SEAL_SEAL)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "eventfd", efd_create)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "eventfdRead", efd_read)) != napi_ok) return s;
  return vl_export(env, exports, "eventfdWrite", efd_write);
}

/*
 * Unix domain sockets as Node lacks them: socket, bind, connect, listen and
 * accept on raw fds, and datagram sockets with batched recvmmsg/sendmmsg (one
 * syscall for many frames). SCM_RIGHTS fd passing is in unix-fds.c.
 */
#include "common.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <unistd.h>

#define MMSG_MAX 64 /* messages per recvmmsg/sendmmsg call */

/* Fills a sockaddr_un from a JS path string; false after throwing. */
static bool get_sun(napi_env env, napi_value v, struct sockaddr_un *sun, socklen_t *len) {
  memset(sun, 0, sizeof *sun);
  sun->sun_family = AF_UNIX;
  char path[4096];
  if (!vl_get_string(env, v, "path", path, sizeof path)) return false;
  size_t n = strlen(path);
  if (n == 0 || n >= sizeof sun->sun_path) {
    vl_throw_errno(env, n == 0 ? EINVAL : ENAMETOOLONG, "sockaddr_un", path);
    return false;
  }
  memcpy(sun->sun_path, path, n);
  *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  return true;
}

/*
 * A datagram destination or peer from JS: a unix socket path (string), or a
 * raw sockaddr (a Buffer from sockaddrInet) for UDP. False after throwing.
 */
static bool get_dest(napi_env env, napi_value v, struct sockaddr_storage *ss, socklen_t *len) {
  bool is_buf = false;
  if (napi_is_buffer(env, v, &is_buf) == napi_ok && is_buf) {
    uint8_t *data;
    size_t n;
    if (!vl_get_bytes(env, v, "dest", &data, &n)) return false;
    if (n < sizeof(sa_family_t) || n > sizeof *ss) {
      vl_throw_arg(env, "ERR_INVALID_ARG_VALUE", "a sockaddr Buffer must come from sockaddrInet");
      return false;
    }
    memset(ss, 0, sizeof *ss);
    memcpy(ss, data, n);
    *len = (socklen_t)n;
    return true;
  }
  return get_sun(env, v, (struct sockaddr_un *)ss, len);
}

/* Text for an error message about a destination: the unix path, or NULL for an inet address. */
static const char *dest_path(const struct sockaddr_storage *ss) {
  return ss->ss_family == AF_UNIX ? ((const struct sockaddr_un *)ss)->sun_path : NULL;
}

/* socket(type) -> fd: an AF_UNIX socket, non-blocking and close-on-exec. */
static napi_value unix_socket(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int32_t type;
  if (!vl_get_int32(env, argv[0], "type", &type)) return NULL;
  int fd = socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return vl_throw_errno(env, errno, "socket", NULL);
  napi_value res;
  NAPI_CALL(env, napi_create_int32(env, fd, &res));
  return res;
}

/* socketpair(type) -> [fd, fd]: connected AF_UNIX sockets, non-blocking and close-on-exec. */
static napi_value unix_socketpair(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int32_t type;
  if (!vl_get_int32(env, argv[0], "type", &type)) return NULL;
  int sv[2];
  if (socketpair(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
    return vl_throw_errno(env, errno, "socketpair", NULL);
  napi_value res, a, b;
  NAPI_CALL(env, napi_create_array_with_length(env, 2, &res));
  NAPI_CALL(env, napi_create_int32(env, sv[0], &a));
  NAPI_CALL(env, napi_create_int32(env, sv[1], &b));
  NAPI_CALL(env, napi_set_element(env, res, 0, a));
  NAPI_CALL(env, napi_set_element(env, res, 1, b));
  return res;
}

/* bind(fd, path) and connect(fd, path) for AF_UNIX sockets. */
static napi_value unix_addr_call(napi_env env, napi_callback_info info, bool is_bind) {
  GET_ARGS(env, info, 2);
  int32_t fd;
  struct sockaddr_un sun;
  socklen_t len;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !get_sun(env, argv[1], &sun, &len)) return NULL;
  int r = is_bind ? bind(fd, (struct sockaddr *)&sun, len) : connect(fd, (struct sockaddr *)&sun, len);
  if (r < 0) return vl_throw_errno(env, errno, is_bind ? "bind" : "connect", sun.sun_path);
  return NULL;
}
static napi_value unix_bind(napi_env env, napi_callback_info info) { return unix_addr_call(env, info, true); }
static napi_value unix_connect(napi_env env, napi_callback_info info) { return unix_addr_call(env, info, false); }

/* listen(fd, backlog) on a bound AF_UNIX stream socket. */
static napi_value unix_listen(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  int32_t fd, backlog;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_int32(env, argv[1], "backlog", &backlog)) return NULL;
  if (listen(fd, backlog) < 0) return vl_throw_errno(env, errno, "listen", NULL);
  return NULL;
}

/* accept(fd) -> fd of the new connection (non-blocking, close-on-exec), or -1 when none is pending. */
static napi_value unix_accept(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  int32_t fd;
  if (!vl_get_int32(env, argv[0], "fd", &fd)) return NULL;
  int c;
  do {
    c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  } while (c < 0 && errno == EINTR);
  if (c < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED)
    return vl_throw_errno(env, errno, "accept4", NULL);
  napi_value res;
  NAPI_CALL(env, napi_create_int32(env, c < 0 ? -1 : c, &res));
  return res;
}

/*
 * sendBatch(fd, buf, offs, lens, start, end, dest: string|Buffer|null) -> next
 * Sends datagrams start..end-1 with sendmmsg (up to 64 per syscall), to
 * `dest` (a unix path, or a sockaddrInet Buffer for UDP) or to the connected
 * peer. Returns the index of the first datagram
 * not sent (end when all were); stops when the socket would block. Throws
 * only when the first datagram fails with another error.
 */
static napi_value send_batch(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 7);
  int32_t fd;
  uint32_t start, end, *offs, *lens;
  uint8_t *buf;
  size_t buf_len, n_offs, n_lens;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_bytes(env, argv[1], "buf", &buf, &buf_len) ||
      !vl_get_u32s(env, argv[2], "offs", false, &offs, &n_offs) ||
      !vl_get_u32s(env, argv[3], "lens", false, &lens, &n_lens) || !vl_get_uint32(env, argv[4], "start", &start) ||
      !vl_get_uint32(env, argv[5], "end", &end))
    return NULL;
  struct sockaddr_storage dst;
  socklen_t dst_len = 0;
  bool to = !vl_is_nullish(env, argv[6]);
  if (to && !get_dest(env, argv[6], &dst, &dst_len)) return NULL;
  if (end > n_offs || end > n_lens || start > end)
    return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "start/end must lie within offs and lens");
  struct mmsghdr msgs[MMSG_MAX];
  struct iovec iov[MMSG_MAX];
  uint32_t i = start;
  while (i < end) {
    unsigned n = end - i < MMSG_MAX ? end - i : MMSG_MAX;
    memset(msgs, 0, sizeof(struct mmsghdr) * n);
    for (unsigned k = 0; k < n; k++) {
      uint32_t j = i + k;
      if ((uint64_t)offs[j] + lens[j] > buf_len)
        return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "a datagram lies outside buf (offs[i] + lens[i] > buf.length)");
      iov[k].iov_base = buf + offs[j];
      iov[k].iov_len = lens[j];
      msgs[k].msg_hdr.msg_iov = &iov[k];
      msgs[k].msg_hdr.msg_iovlen = 1;
      if (to) {
        msgs[k].msg_hdr.msg_name = &dst;
        msgs[k].msg_hdr.msg_namelen = dst_len;
      }
    }
    int r;
    do r = sendmmsg(fd, msgs, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || i > start) break;
      return vl_throw_errno(env, errno, "sendmmsg", to ? dest_path(&dst) : NULL);
    }
    i += (uint32_t)r;
    if ((unsigned)r < n) break;
  }
  napi_value res;
  NAPI_CALL(env, napi_create_uint32(env, i, &res));
  return res;
}

/* Called for each datagram recv_loop received, with its sender when asked for; false aborts (a JS exception is pending). */
typedef bool (*dgram_fn)(void *ctx, uint32_t i, const struct sockaddr_storage *from, socklen_t from_len);

#define RECV_FAILED -1  /* the first recvmmsg failed: errno says why */
#define RECV_ABORTED -2 /* a dgram_fn returned false */

/*
 * The recvmmsg loop of recvBatch and recvBatchFrom: up to `max` datagrams,
 * MMSG_MAX per syscall, datagram i at buf[i*slot ..], lens[i] its full
 * length (MSG_TRUNC). Stops when the socket has no more. `each` (when not
 * NULL) sees every datagram with its sender. Returns the count, RECV_FAILED
 * (only when nothing was received) or RECV_ABORTED.
 */
static int64_t recv_loop(int fd, uint8_t *buf, uint32_t slot, uint32_t *lens, size_t max, dgram_fn each, void *ctx) {
  struct mmsghdr msgs[MMSG_MAX];
  struct iovec iov[MMSG_MAX];
  struct sockaddr_storage from[MMSG_MAX];
  uint32_t total = 0;
  while (total < max) {
    unsigned n = max - total < MMSG_MAX ? (unsigned)(max - total) : MMSG_MAX;
    memset(msgs, 0, sizeof(struct mmsghdr) * n);
    for (unsigned k = 0; k < n; k++) {
      iov[k].iov_base = buf + (size_t)(total + k) * slot;
      iov[k].iov_len = slot;
      msgs[k].msg_hdr.msg_iov = &iov[k];
      msgs[k].msg_hdr.msg_iovlen = 1;
      if (each) {
        msgs[k].msg_hdr.msg_name = &from[k];
        msgs[k].msg_hdr.msg_namelen = sizeof from[k];
      }
    }
    int r;
    do r = recvmmsg(fd, msgs, n, MSG_DONTWAIT | MSG_TRUNC, NULL);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || total > 0) break;
      return RECV_FAILED;
    }
    for (int k = 0; k < r; k++) {
      lens[total + k] = msgs[k].msg_len;
      if (each && !each(ctx, total + k, &from[k], msgs[k].msg_hdr.msg_namelen)) return RECV_ABORTED;
    }
    total += (uint32_t)r;
    if ((unsigned)r < n) break;
  }
  return total;
}

/* Length of the path in a sockaddr_un of `al` bytes (0 for an unnamed sender). */
static size_t sun_path_len(const struct sockaddr_un *from, socklen_t al) {
  size_t off = offsetof(struct sockaddr_un, sun_path);
  return al > off ? strnlen(from->sun_path, al - off) : 0;
}

/* Same sender: unix paths compared as paths, inet addresses by address and port. */
static bool same_addr(const struct sockaddr_storage *a, socklen_t al, const struct sockaddr_storage *b, socklen_t bl) {
  if (al < sizeof(sa_family_t) || a->ss_family != b->ss_family) return false;
  if (a->ss_family == AF_UNIX) {
    size_t n = sun_path_len((const struct sockaddr_un *)a, al);
    return n == sun_path_len((const struct sockaddr_un *)b, bl) &&
           memcmp(((const struct sockaddr_un *)a)->sun_path, ((const struct sockaddr_un *)b)->sun_path, n) == 0;
  }
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
    return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  if (a->ss_family == AF_INET6) {
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
  }
  return false;
}

/* The result of recv_loop as a JS number, or the exception it stands for. */
static napi_value recv_result(napi_env env, int64_t got) {
  if (got == RECV_FAILED) return vl_throw_errno(env, errno, "recvmmsg", NULL);
  if (got == RECV_ABORTED) return NULL;
  napi_value res;
  NAPI_CALL(env, napi_create_uint32(env, (uint32_t)got, &res));
  return res;
}

struct addr_ctx {
  napi_env env;
  napi_value addrs;
};

/* recvBatch: addrs[i] = the sender's path. */
static bool store_addr(void *ctx, uint32_t i, const struct sockaddr_storage *from, socklen_t al) {
  struct addr_ctx *c = ctx;
  const struct sockaddr_un *sun = (const struct sockaddr_un *)from;
  size_t len = from->ss_family == AF_UNIX ? sun_path_len(sun, al) : 0;
  napi_value s;
  return napi_create_string_utf8(c->env, sun->sun_path, len, &s) == napi_ok &&
         napi_set_element(c->env, c->addrs, i, s) == napi_ok;
}

/*
 * recvBatch(fd, buf, slot, lens: Uint32Array, addrs: string[]|null) -> n
 * Receives up to lens.length datagrams with recvmmsg; datagram i lands at
 * buf[i*slot ..] and lens[i] is its full length: lens[i] > slot means it was
 * truncated (drop it). With `addrs`, addrs[i] is the sender's path ('' when
 * unnamed). Returns 0 when nothing is ready.
 */
static napi_value recv_batch(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 5);
  int32_t fd;
  uint32_t slot, *lens;
  uint8_t *buf;
  size_t buf_len, n_lens;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_bytes(env, argv[1], "buf", &buf, &buf_len) ||
      !vl_get_uint32(env, argv[2], "slot", &slot) || !vl_get_u32s(env, argv[3], "lens", false, &lens, &n_lens))
    return NULL;
  if (slot == 0) return vl_throw_arg(env, "ERR_INVALID_ARG_VALUE", "slot must be > 0");
  size_t max = buf_len / slot < n_lens ? buf_len / slot : n_lens;
  struct addr_ctx ctx = {env, argv[4]};
  bool want_addr = !vl_is_nullish(env, argv[4]);
  return recv_result(env, recv_loop(fd, buf, slot, lens, max, want_addr ? store_addr : NULL, &ctx));
}

struct peer_ctx {
  struct sockaddr_storage peer;
  socklen_t peer_len;
  uint8_t *strangers;
};

/* recvBatchFrom: strangers[i] = 1 unless the sender is the peer. */
static bool mark_stranger(void *ctx, uint32_t i, const struct sockaddr_storage *from, socklen_t al) {
  struct peer_ctx *c = ctx;
  c->strangers[i] = !same_addr(from, al, &c->peer, c->peer_len);
  return true;
}

/*
 * recvBatchFrom(fd, buf, slot, lens, peer: string|Buffer, strangers: Uint8Array) -> n
 * recvBatch for an unconnected datagram socket that takes frames from one
 * peer only (a unix path, or a sockaddrInet Buffer for UDP): strangers[i] = 1
 * when datagram i came from another sender (the caller drops and counts
 * it), else 0. Compared here, so no string is made per datagram.
 */
static napi_value recv_batch_from(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 6);
  int32_t fd;
  uint32_t slot, *lens;
  uint8_t *buf, *strangers;
  size_t buf_len, n_lens, n_str;
  struct peer_ctx ctx;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_bytes(env, argv[1], "buf", &buf, &buf_len) ||
      !vl_get_uint32(env, argv[2], "slot", &slot) || !vl_get_u32s(env, argv[3], "lens", false, &lens, &n_lens) ||
      !get_dest(env, argv[4], &ctx.peer, &ctx.peer_len) ||
      !vl_get_bytes(env, argv[5], "strangers", &strangers, &n_str))
    return NULL;
  ctx.strangers = strangers;
  if (slot == 0) return vl_throw_arg(env, "ERR_INVALID_ARG_VALUE", "slot must be > 0");
  size_t max = buf_len / slot < n_lens ? buf_len / slot : n_lens;
  if (n_str < max) max = n_str;
  return recv_result(env, recv_loop(fd, buf, slot, lens, max, mark_stranger, &ctx));
}

/*
 * setBuffers(fd, sndbuf, rcvbuf): SO_SNDBUFFORCE / SO_RCVBUFFORCE (with
 * CAP_NET_ADMIN; else SO_SNDBUF / SO_RCVBUF, capped by net.core.*mem_max).
 * 0 leaves that buffer alone. A unix datagram socket's send buffer bounds
 * the datagrams in flight to its peer, so a larger one rides out bursts.
 */
static napi_value set_buffers(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  int32_t fd, snd, rcv;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_int32(env, argv[1], "sndbuf", &snd) ||
      !vl_get_int32(env, argv[2], "rcvbuf", &rcv))
    return NULL;
  if (snd > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &snd, sizeof snd) < 0 &&
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof snd) < 0)
    return vl_throw_errno(env, errno, "setsockopt SO_SNDBUF", NULL);
  if (rcv > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv) < 0 &&
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv) < 0)
    return vl_throw_errno(env, errno, "setsockopt SO_RCVBUF", NULL);
  return NULL;
}

napi_status vl_init_unix(napi_env env, napi_value exports) {
  napi_status s;
  if ((s = vl_export(env, exports, "socket", unix_socket)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "socketpair", unix_socketpair)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "bind", unix_bind)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "connect", unix_connect)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "listen", unix_listen)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "accept", unix_accept)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "sendBatch", send_batch)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "recvBatch", recv_batch)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "recvBatchFrom", recv_batch_from)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "setBuffers", set_buffers)) != napi_ok) return s;
  if ((s = vl_export_int(env, exports, "SOCK_STREAM", SOCK_STREAM)) != napi_ok) return s;
  if ((s = vl_export_int(env, exports, "SOCK_DGRAM", SOCK_DGRAM)) != napi_ok) return s;
  return vl_export_int(env, exports, "SOCK_SEQPACKET", SOCK_SEQPACKET);
}

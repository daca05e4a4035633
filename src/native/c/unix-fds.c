/*
 * SCM_RIGHTS fd passing on unix stream sockets, as Node lacks it (vhost-user
 * hands its memory regions and eventfds this way): sendFds and recvFds.
 */
#include "common.h"

#include <string.h>
#include <sys/socket.h>

#define FDS_MAX 32 /* most fds in one SCM_RIGHTS message */

/* sendFds(fd, data, fds: number[]) -> bytes sent (data must be non-empty): one sendmsg with SCM_RIGHTS. */
static napi_value send_fds(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  int32_t fd;
  uint8_t *data;
  size_t len;
  uint32_t nfds;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_bytes(env, argv[1], "data", &data, &len)) return NULL;
  if (napi_get_array_length(env, argv[2], &nfds) != napi_ok)
    return vl_throw_arg(env, "ERR_INVALID_ARG_TYPE", "the \"fds\" argument must be an array of fds");
  if (nfds > FDS_MAX || len == 0)
    return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "send 1 or more bytes with at most 32 fds");
  union {
    char buf[CMSG_SPACE(sizeof(int) * FDS_MAX)];
    struct cmsghdr align;
  } ctl;
  memset(&ctl, 0, sizeof ctl);
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    msg.msg_control = ctl.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    int *out = (int *)CMSG_DATA(c);
    for (uint32_t k = 0; k < nfds; k++) {
      napi_value e;
      int32_t v;
      NAPI_CALL(env, napi_get_element(env, argv[2], k, &e));
      if (!vl_get_int32(env, e, "fds[i]", &v)) return NULL;
      memcpy(out + k, &v, sizeof v);
    }
  }
  ssize_t r;
  do r = sendmsg(fd, &msg, MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  if (r < 0) return vl_throw_errno(env, errno, "sendmsg", NULL);
  napi_value res;
  NAPI_CALL(env, napi_create_int64(env, r, &res));
  return res;
}

/*
 * recvFds(fd, buf) -> { bytes, fds, truncated } | null
 * One recvmsg into buf taking up to 32 fds (close-on-exec); null when nothing
 * is ready, bytes 0 at end of stream. truncated: the sender sent more fds
 * than fit (the kernel closed the rest).
 */
static napi_value recv_fds(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  int32_t fd;
  uint8_t *data;
  size_t len;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_bytes(env, argv[1], "buf", &data, &len)) return NULL;
  union {
    char buf[CMSG_SPACE(sizeof(int) * FDS_MAX)];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {.iov_base = data, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
  ssize_t r;
  do r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  while (r < 0 && errno == EINTR);
  napi_value res, arr, v;
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      NAPI_CALL(env, napi_get_null(env, &res));
      return res;
    }
    return vl_throw_errno(env, errno, "recvmsg", NULL);
  }
  NAPI_CALL(env, napi_create_object(env, &res));
  NAPI_CALL(env, napi_create_array(env, &arr));
  uint32_t n = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t j = 0; j < k; j++) {
      int got;
      memcpy(&got, CMSG_DATA(c) + j * sizeof(int), sizeof got);
      NAPI_CALL(env, napi_create_int32(env, got, &v));
      NAPI_CALL(env, napi_set_element(env, arr, n++, v));
    }
  }
  NAPI_CALL(env, napi_create_int64(env, r, &v));
  NAPI_CALL(env, napi_set_named_property(env, res, "bytes", v));
  NAPI_CALL(env, napi_set_named_property(env, res, "fds", arr));
  NAPI_CALL(env, napi_get_boolean(env, (msg.msg_flags & MSG_CTRUNC) != 0, &v));
  NAPI_CALL(env, napi_set_named_property(env, res, "truncated", v));
  return res;
}

napi_status vl_init_unix_fds(napi_env env, napi_value exports) {
  napi_status s;
  if ((s = vl_export(env, exports, "sendFds", send_fds)) != napi_ok) return s;
  return vl_export(env, exports, "recvFds", recv_fds);
}

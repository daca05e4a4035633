/*
 * UDP sockets for the `dgram` port kind (QEMU -netdev dgram over inet), so
 * that its datagrams move with the batched recvBatchFrom / sendBatch of
 * unix.c (recvmmsg/sendmmsg) instead of one syscall per datagram in Node's
 * dgram module. Addresses are numeric here; names are resolved in TypeScript.
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Fills `ss` for a numeric host and port. With `v6`, an IPv4 host becomes
 * its v4-mapped IPv6 address (::ffff:a.b.c.d), as a dual-stack socket sees
 * it. False (errno EINVAL) when the host is not a numeric address of a
 * usable family.
 */
static bool inet_addr_of(const char *host, uint32_t port, bool v6, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  struct in_addr a4;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
  if (port > 65535) {
    errno = EINVAL;
    return false;
  }
  if (inet_pton(AF_INET, host, &a4) == 1) {
    if (!v6) {
      struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
      s4->sin_family = AF_INET;
      s4->sin_port = htons((uint16_t)port);
      s4->sin_addr = a4;
      *len = sizeof *s4;
      return true;
    }
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    s6->sin6_addr.s6_addr[10] = 0xff;
    s6->sin6_addr.s6_addr[11] = 0xff;
    memcpy(&s6->sin6_addr.s6_addr[12], &a4, 4);
    *len = sizeof *s6;
    return true;
  }
  if (v6 && inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    *len = sizeof *s6;
    return true;
  }
  errno = EINVAL;
  return false;
}

/*
 * sockaddrInet(host, port, v6) -> Buffer: the raw sockaddr of a numeric
 * address, for sendBatch's dest and recvBatchFrom's peer on a UDP socket
 * (`v6`: the socket is AF_INET6, dual-stack).
 */
static napi_value sockaddr_inet(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  char host[INET6_ADDRSTRLEN + 1];
  uint32_t port;
  bool v6;
  if (!vl_get_string(env, argv[0], "host", host, sizeof host) || !vl_get_uint32(env, argv[1], "port", &port) ||
      !vl_get_bool(env, argv[2], "v6", &v6))
    return NULL;
  struct sockaddr_storage ss;
  socklen_t len;
  if (!inet_addr_of(host, port, v6, &ss, &len)) return vl_throw_errno(env, errno, "inet_pton", host);
  napi_value res;
  void *data;
  NAPI_CALL(env, napi_create_buffer_copy(env, len, &ss, &data, &res));
  return res;
}

/*
 * udpOpen(host, port) -> { fd, port }: a non-blocking, close-on-exec UDP
 * socket bound to a numeric host (IPv6 hosts get a dual-stack AF_INET6
 * socket) and port (0: the kernel picks one; the bound port is returned).
 */
static napi_value udp_open(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  char host[INET6_ADDRSTRLEN + 1];
  uint32_t port;
  if (!vl_get_string(env, argv[0], "host", host, sizeof host) || !vl_get_uint32(env, argv[1], "port", &port))
    return NULL;
  struct in_addr a4;
  bool v6 = inet_pton(AF_INET, host, &a4) != 1;
  struct sockaddr_storage ss;
  socklen_t len;
  if (!inet_addr_of(host, port, v6, &ss, &len)) return vl_throw_errno(env, errno, "inet_pton", host);
  int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return vl_throw_errno(env, errno, "socket", NULL);
  int off = 0;
  const char *fail = NULL;
  if (v6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) < 0)
    fail = "setsockopt IPV6_V6ONLY";
  else if (bind(fd, (struct sockaddr *)&ss, len) < 0)
    fail = "bind";
  else if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
    fail = "getsockname";
  if (fail) {
    int err = errno;
    close(fd);
    return vl_throw_errno(env, err, fail, host);
  }
  uint16_t bound = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
  napi_value res, vfd, vport;
  NAPI_CALL(env, napi_create_object(env, &res));
  NAPI_CALL(env, napi_create_int32(env, fd, &vfd));
  NAPI_CALL(env, napi_create_uint32(env, bound, &vport));
  NAPI_CALL(env, napi_set_named_property(env, res, "fd", vfd));
  NAPI_CALL(env, napi_set_named_property(env, res, "port", vport));
  return res;
}

napi_status vl_init_udp(napi_env env, napi_value exports) {
  napi_status s;
  if ((s = vl_export(env, exports, "udpOpen", udp_open)) != napi_ok) return s;
  return vl_export(env, exports, "sockaddrInet", sockaddr_inet);
}

/*
 * AF_PACKET sockets (packet(7)) for the `host` port kind: a raw socket bound
 * to one existing interface, promiscuous, that does not read back the frames
 * it (or the host) sends. Frames then travel with recvBatch / sendBatch
 * (recvmmsg / sendmmsg, no address: the bound interface).
 */
#include "common.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23 /* Linux 4.20 */
#endif

/*
 * packetOpen(ifname, promisc: boolean) -> { fd, ifindex }
 * socket(AF_PACKET, SOCK_RAW) created with protocol 0 (nothing queued yet),
 * then bound to the interface for ETH_P_ALL, so no frame of another
 * interface ever lands in it. PACKET_IGNORE_OUTGOING: frames sent out of the
 * interface (by this socket or the host) are not delivered to it.
 * PACKET_MR_PROMISC (when asked): the interface takes frames for any MAC,
 * dropped when the socket closes.
 */
static napi_value packet_open(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  char name[IF_NAMESIZE];
  bool promisc;
  if (!vl_get_string(env, argv[0], "ifname", name, sizeof name) || !vl_get_bool(env, argv[1], "promisc", &promisc))
    return NULL;
  unsigned ifindex = if_nametoindex(name);
  if (ifindex == 0) return vl_throw_errno(env, errno == 0 ? ENODEV : errno, "if_nametoindex", name);
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return vl_throw_errno(env, errno, "socket AF_PACKET", name);
  const char *what = "bind";
  struct sockaddr_ll sll;
  memset(&sll, 0, sizeof sll);
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = (int)ifindex;
  int one = 1;
  if (setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) < 0) {
    what = "setsockopt PACKET_IGNORE_OUTGOING";
    goto fail;
  }
  if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) goto fail;
  if (promisc) {
    struct packet_mreq mr;
    memset(&mr, 0, sizeof mr);
    mr.mr_ifindex = (int)ifindex;
    mr.mr_type = PACKET_MR_PROMISC;
    if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0) {
      what = "setsockopt PACKET_ADD_MEMBERSHIP";
      goto fail;
    }
  }
  napi_value res, v;
  NAPI_CALL(env, napi_create_object(env, &res));
  NAPI_CALL(env, napi_create_int32(env, fd, &v));
  NAPI_CALL(env, napi_set_named_property(env, res, "fd", v));
  NAPI_CALL(env, napi_create_uint32(env, ifindex, &v));
  NAPI_CALL(env, napi_set_named_property(env, res, "ifindex", v));
  return res;
fail: {
  int err = errno;
  close(fd);
  return vl_throw_errno(env, err, what, name);
}
}

napi_status vl_init_packet(napi_env env, napi_value exports) {
  return vl_export(env, exports, "packetOpen", packet_open);
}

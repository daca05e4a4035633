/*
 * TAP devices (Documentation/networking/tuntap.rst) and the two interface
 * settings a TAP port needs (MTU, up), set with ioctls rather than by running
 * `ip link`, so opening a port needs no external tool.
 */
#include "common.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * tapOpen(name, attach, vnetHdrSize, offload) -> { fd, name }
 * Opens /dev/net/tun as IFF_TAP|IFF_NO_PI (plus IFF_VNET_HDR when
 * vnetHdrSize > 0, then TUNSETVNETHDRSZ), applies TUNSETOFFLOAD when
 * offload >= 0, and makes the fd non-blocking and close-on-exec.
 * attach: the interface must already exist (a persistent TAP); otherwise it is
 * created, or attached to when it exists. `name` may hold a "%d" pattern.
 */
static napi_value tap_open(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 4);
  char name[IFNAMSIZ];
  bool attach;
  int32_t hdr, offload;
  if (!vl_get_string(env, argv[0], "name", name, sizeof name) || !vl_get_bool(env, argv[1], "attach", &attach) ||
      !vl_get_int32(env, argv[2], "vnetHdrSize", &hdr) || !vl_get_int32(env, argv[3], "offload", &offload))
    return NULL;
  if (attach && if_nametoindex(name) == 0) return vl_throw_errno(env, errno, "if_nametoindex", name);
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return vl_throw_errno(env, errno, "open", "/dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (hdr > 0 ? IFF_VNET_HDR : 0);
  memcpy(ifr.ifr_name, name, strlen(name));
  const char *fail = NULL;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0)
    fail = "ioctl TUNSETIFF";
  else if (hdr > 0 && ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0)
    fail = "ioctl TUNSETVNETHDRSZ";
  else if (offload >= 0 && ioctl(fd, TUNSETOFFLOAD, (unsigned long)offload) < 0)
    fail = "ioctl TUNSETOFFLOAD";
  if (fail) {
    int err = errno;
    close(fd);
    return vl_throw_errno(env, err, fail, name);
  }
  napi_value res, vfd, vname;
  NAPI_CALL(env, napi_create_object(env, &res));
  NAPI_CALL(env, napi_create_int32(env, fd, &vfd));
  ifr.ifr_name[IFNAMSIZ - 1] = 0;
  NAPI_CALL(env, napi_create_string_utf8(env, ifr.ifr_name, NAPI_AUTO_LENGTH, &vname));
  NAPI_CALL(env, napi_set_named_property(env, res, "fd", vfd));
  NAPI_CALL(env, napi_set_named_property(env, res, "name", vname));
  return res;
}

/* An ioctl on an interface through a throw-away AF_INET socket. */
static int if_ioctl(unsigned long req, struct ifreq *ifr) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  int r = ioctl(s, req, ifr);
  int err = errno;
  close(s);
  errno = err;
  return r;
}

/* ifSetMtu(name, mtu): SIOCSIFMTU. */
static napi_value if_set_mtu(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  int32_t mtu;
  if (!vl_get_string(env, argv[0], "name", ifr.ifr_name, IFNAMSIZ) || !vl_get_int32(env, argv[1], "mtu", &mtu))
    return NULL;
  ifr.ifr_mtu = mtu;
  if (if_ioctl(SIOCSIFMTU, &ifr) < 0) return vl_throw_errno(env, errno, "ioctl SIOCSIFMTU", ifr.ifr_name);
  return NULL;
}

/* ifSetUp(name, up): sets or clears IFF_UP (SIOCGIFFLAGS, SIOCSIFFLAGS). */
static napi_value if_set_up(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  bool up;
  if (!vl_get_string(env, argv[0], "name", ifr.ifr_name, IFNAMSIZ) || !vl_get_bool(env, argv[1], "up", &up))
    return NULL;
  if (if_ioctl(SIOCGIFFLAGS, &ifr) < 0) return vl_throw_errno(env, errno, "ioctl SIOCGIFFLAGS", ifr.ifr_name);
  if (up)
    ifr.ifr_flags |= IFF_UP;
  else
    ifr.ifr_flags &= ~IFF_UP;
  if (if_ioctl(SIOCSIFFLAGS, &ifr) < 0) return vl_throw_errno(env, errno, "ioctl SIOCSIFFLAGS", ifr.ifr_name);
  return NULL;
}

/* ifIndex(name) -> index, or 0 when no such interface exists in this namespace. */
static napi_value if_index(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  char name[IFNAMSIZ];
  if (!vl_get_string(env, argv[0], "name", name, sizeof name)) return NULL;
  napi_value res;
  NAPI_CALL(env, napi_create_uint32(env, if_nametoindex(name), &res));
  return res;
}

napi_status vl_init_tap(napi_env env, napi_value exports) {
  napi_status s;
  if ((s = vl_export(env, exports, "tapOpen", tap_open)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "ifSetMtu", if_set_mtu)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "ifSetUp", if_set_up)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "ifIndex", if_index)) != napi_ok) return s;
  if ((s = vl_export_int(env, exports, "TUN_F_CSUM", TUN_F_CSUM)) != napi_ok) return s;
  if ((s = vl_export_int(env, exports, "TUN_F_TSO4", TUN_F_TSO4)) != napi_ok) return s;
  if ((s = vl_export_int(env, exports, "TUN_F_TSO6", TUN_F_TSO6)) != napi_ok) return s;
  if ((s = vl_export_int(env, exports, "TUN_F_TSO_ECN", TUN_F_TSO_ECN)) != napi_ok) return s;
  return vl_export_int(env, exports, "IFNAMSIZ", IFNAMSIZ);
}

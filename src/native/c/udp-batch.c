/*
 * Batched UDP for a socket that serves many peers (the VXLAN transport):
 * recvmmsg that reports each datagram's sender into a caller-owned buffer
 * (no JS value per datagram), sendmmsg with a destination per datagram, UDP
 * GSO (UDP_SEGMENT: runs of equal-sized datagrams to one destination go out
 * as one message the kernel cuts) and UDP GRO on receive (UDP_GRO: the kernel
 * hands over runs of one flow's datagrams as one buffer plus their size).
 */
#include "common.h"
#include "udp-parse.h"

#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/socket.h>

#define UB_MMSG 64        /* messages per recvmmsg/sendmmsg call */
#define UB_DEST 28        /* bytes per destination entry: a sockaddr_in or sockaddr_in6 */
#define UB_GSO_SEGS 64    /* UDP_MAX_SEGMENTS of every kernel with UDP_SEGMENT (4.18+) */
#define UB_GSO_BYTES 65000 /* payload bytes of one GSO message, below the 65507 of IPv4 UDP */

/*
 * udpRecvBatch(fd, buf, slot, lens: Uint32Array, senders: Uint8Array, gso: Uint32Array|null) -> n
 * recvmmsg of up to min(lens.length, buf.length / slot, senders.length / 20,
 * gso.length) datagrams. Datagram i lands at buf[i*slot ..]; lens[i] is its
 * full length (> slot: truncated); senders[20i .. 20i+20) its sender record
 * (put_sender). With `gso`: gso[i] is the segment size when the kernel
 * coalesced several datagrams of one sender into this one (UDP_GRO), else 0.
 * Returns 0 when nothing is ready; throws only when the first call fails.
 */
static napi_value udp_recv_batch(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 6);
  int32_t fd;
  uint32_t slot, *lens, *gso = NULL;
  uint8_t *buf, *senders;
  size_t buf_len, n_lens, n_snd, n_gso = 0;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_bytes(env, argv[1], "buf", &buf, &buf_len) ||
      !vl_get_uint32(env, argv[2], "slot", &slot) || !vl_get_u32s(env, argv[3], "lens", false, &lens, &n_lens) ||
      !vl_get_bytes(env, argv[4], "senders", &senders, &n_snd))
    return NULL;
  if (!vl_is_nullish(env, argv[5]) && !vl_get_u32s(env, argv[5], "gso", false, &gso, &n_gso)) return NULL;
  if (slot == 0) return vl_throw_arg(env, "ERR_INVALID_ARG_VALUE", "slot must be > 0");
  size_t max = buf_len / slot;
  if (n_lens < max) max = n_lens;
  if (n_snd / UB_ADDR < max) max = n_snd / UB_ADDR;
  if (gso && n_gso < max) max = n_gso;

  struct mmsghdr msgs[UB_MMSG];
  struct iovec iov[UB_MMSG];
  struct sockaddr_storage from[UB_MMSG];
  union {
    char buf[CMSG_SPACE(sizeof(int))];
    struct cmsghdr align;
  } ctrl[UB_MMSG];
  uint32_t total = 0;
  while (total < max) {
    unsigned n = max - total < UB_MMSG ? (unsigned)(max - total) : UB_MMSG;
    memset(msgs, 0, sizeof(struct mmsghdr) * n);
    for (unsigned k = 0; k < n; k++) {
      iov[k].iov_base = buf + (size_t)(total + k) * slot;
      iov[k].iov_len = slot;
      msgs[k].msg_hdr.msg_iov = &iov[k];
      msgs[k].msg_hdr.msg_iovlen = 1;
      msgs[k].msg_hdr.msg_name = &from[k];
      msgs[k].msg_hdr.msg_namelen = sizeof from[k];
      if (gso) {
        msgs[k].msg_hdr.msg_control = ctrl[k].buf;
        msgs[k].msg_hdr.msg_controllen = sizeof ctrl[k].buf;
      }
    }
    int r;
    do r = recvmmsg(fd, msgs, n, MSG_DONTWAIT | MSG_TRUNC, NULL);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || total > 0) break;
      return vl_throw_errno(env, errno, "recvmmsg", NULL);
    }
    for (int k = 0; k < r; k++) {
      uint32_t i = total + (uint32_t)k;
      lens[i] = msgs[k].msg_len;
      put_sender(senders + (size_t)i * UB_ADDR, &from[k], msgs[k].msg_hdr.msg_namelen);
      if (gso) gso[i] = gro_size(&msgs[k].msg_hdr);
    }
    total += (uint32_t)r;
    if ((unsigned)r < n) break;
  }
  napi_value res;
  NAPI_CALL(env, napi_create_uint32(env, total, &res));
  return res;
}

/* Destination entry `d` of the table: its sockaddr and length; false when it is not AF_INET / AF_INET6. */
static bool dest_of(uint8_t *table, size_t table_len, uint32_t d, struct sockaddr **sa, socklen_t *len) {
  if ((size_t)(d + 1) * UB_DEST > table_len) return false;
  struct sockaddr *s = (struct sockaddr *)(table + (size_t)d * UB_DEST);
  sa_family_t fam;
  memcpy(&fam, s, sizeof fam);
  if (fam == AF_INET)
    *len = sizeof(struct sockaddr_in);
  else if (fam == AF_INET6)
    *len = sizeof(struct sockaddr_in6);
  else
    return false;
  *sa = s;
  return true;
}

/*
 * udpSendBatch(fd, buf, offs, lens, dests: Uint16Array, table: Buffer, start, end, gsoSegs) -> next
 * sendmmsg of datagrams start..end-1; datagram i goes to destination entry
 * dests[i] of `table` (28 bytes per entry: a sockaddrInet Buffer, padded).
 * With gsoSegs > 1, a run of up to gsoSegs datagrams that lie back to back
 * in buf, go to one destination and have the first one's size (the last may
 * be shorter) is one message with UDP_SEGMENT (one skb through the stack,
 * cut by the kernel or the NIC). Returns the index of the first datagram
 * not sent (end when all were); stops when the socket would block. Throws
 * only when the first message fails with another error (EIO or EINVAL from
 * a GSO message: the path cannot segment; send again with gsoSegs 1).
 */
static napi_value udp_send_batch(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 9);
  int32_t fd;
  uint32_t start, end, gso_segs, *offs, *lens;
  uint8_t *buf, *table;
  uint16_t *dests;
  size_t buf_len, n_offs, n_lens, n_dests, table_len;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_bytes(env, argv[1], "buf", &buf, &buf_len) ||
      !vl_get_u32s(env, argv[2], "offs", false, &offs, &n_offs) ||
      !vl_get_u32s(env, argv[3], "lens", false, &lens, &n_lens))
    return NULL;
  bool is_ta = false;
  napi_typedarray_type type;
  void *dp = NULL;
  napi_is_typedarray(env, argv[4], &is_ta);
  if (!is_ta || napi_get_typedarray_info(env, argv[4], &type, &n_dests, &dp, NULL, NULL) != napi_ok ||
      type != napi_uint16_array)
    return vl_throw_arg(env, "ERR_INVALID_ARG_TYPE", "the \"dests\" argument must be a Uint16Array");
  dests = dp;
  if (!vl_get_bytes(env, argv[5], "table", &table, &table_len) || !vl_get_uint32(env, argv[6], "start", &start) ||
      !vl_get_uint32(env, argv[7], "end", &end) || !vl_get_uint32(env, argv[8], "gsoSegs", &gso_segs))
    return NULL;
  if (end > n_offs || end > n_lens || end > n_dests || start > end)
    return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "start/end must lie within offs, lens and dests");
  if (gso_segs > UB_GSO_SEGS) gso_segs = UB_GSO_SEGS;

  struct mmsghdr msgs[UB_MMSG];
  struct iovec iov[UB_MMSG];
  uint32_t first[UB_MMSG + 1]; /* first datagram of each message; first[n] = one past the last */
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } ctrl[UB_MMSG];
  uint32_t i = start;
  while (i < end) {
    unsigned n = 0;
    uint32_t j = i;
    memset(msgs, 0, sizeof msgs);
    while (n < UB_MMSG && j < end) {
      struct sockaddr *sa;
      socklen_t sl;
      if ((uint64_t)offs[j] + lens[j] > buf_len)
        return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "a datagram lies outside buf (offs[i] + lens[i] > buf.length)");
      if (!dest_of(table, table_len, dests[j], &sa, &sl))
        return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "dests[i] is not an inet entry of table");
      /* A GSO run: back to back, one destination, the first one's size (the last may be shorter). */
      uint32_t seg = lens[j], k = j + 1;
      size_t bytes = seg;
      if (gso_segs > 1 && seg > 0) {
        while (k < end && k - j < gso_segs && dests[k] == dests[j] && offs[k] == offs[k - 1] + lens[k - 1] &&
               lens[k] <= seg && lens[k] > 0 && bytes + lens[k] <= UB_GSO_BYTES) {
          bytes += lens[k];
          if ((uint64_t)offs[k] + lens[k] > buf_len)
            return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "a datagram lies outside buf (offs[i] + lens[i] > buf.length)");
          bool last = lens[k] < seg;
          k++;
          if (last) break;
        }
      }
      first[n] = j;
      iov[n].iov_base = buf + offs[j];
      iov[n].iov_len = bytes;
      msgs[n].msg_hdr.msg_iov = &iov[n];
      msgs[n].msg_hdr.msg_iovlen = 1;
      msgs[n].msg_hdr.msg_name = sa;
      msgs[n].msg_hdr.msg_namelen = sl;
      if (k - j > 1) {
        memset(ctrl[n].buf, 0, sizeof ctrl[n].buf); /* the padding after the 2-byte value goes to the kernel too */
        msgs[n].msg_hdr.msg_control = ctrl[n].buf;
        msgs[n].msg_hdr.msg_controllen = sizeof ctrl[n].buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[n].msg_hdr);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t s16 = (uint16_t)seg;
        memcpy(CMSG_DATA(c), &s16, sizeof s16);
      }
      n++;
      j = k;
    }
    first[n] = j;
    int r;
    do r = sendmmsg(fd, msgs, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || i > start) break;
      return vl_throw_errno(env, errno, "sendmmsg", NULL);
    }
    i = first[r];
    if ((unsigned)r < n) break;
  }
  napi_value res;
  NAPI_CALL(env, napi_create_uint32(env, i, &res));
  return res;
}

/*
 * udpOffloads(fd, gro: boolean) -> bits: 1 when the kernel takes UDP_SEGMENT
 * on this socket (GSO sends), 2 when UDP_GRO was switched on (`gro` true and
 * the kernel has it). Never throws for a kernel without them.
 */
static napi_value udp_offloads(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 2);
  int32_t fd;
  bool gro;
  if (!vl_get_int32(env, argv[0], "fd", &fd) || !vl_get_bool(env, argv[1], "gro", &gro)) return NULL;
  uint32_t bits = 0;
  int v = 0;
  socklen_t vl = sizeof v;
  /* Reading UDP_SEGMENT (the socket's default gso_size) works where the kernel knows the option. */
  if (getsockopt(fd, SOL_UDP, UDP_SEGMENT, &v, &vl) == 0) bits |= 1;
  int on = 1;
  if (gro && setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof on) == 0) bits |= 2;
  napi_value res;
  NAPI_CALL(env, napi_create_uint32(env, bits, &res));
  return res;
}

napi_status vl_init_udp_batch(napi_env env, napi_value exports) {
  napi_status s;
  if ((s = vl_export(env, exports, "udpRecvBatch", udp_recv_batch)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "udpSendBatch", udp_send_batch)) != napi_ok) return s;
  return vl_export(env, exports, "udpOffloads", udp_offloads);
}

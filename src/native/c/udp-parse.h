/*
 * What udp-batch.c reads out of a received message (the sender's address,
 * the UDP_GRO control message), apart so the fuzz harnesses (fuzz/) compile
 * it without Node-API.
 */
#ifndef VMLINK_UDP_PARSE_H
#define VMLINK_UDP_PARSE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

#define UB_ADDR 20 /* bytes per sender record: 16 address, 2 port, 1 family, 1 zero */

/*
 * Writes the 20-byte sender record of `from`: the address as IPv6 (IPv4 as
 * ::ffff:a.b.c.d), the port (network order), the family (4 or 6). An
 * unexpected family gives family 0.
 */
static inline void put_sender(uint8_t *rec, const struct sockaddr_storage *from, socklen_t al) {
  memset(rec, 0, UB_ADDR);
  if (from->ss_family == AF_INET && al >= sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *s4 = (const void *)from;
    rec[10] = rec[11] = 0xff;
    memcpy(rec + 12, &s4->sin_addr, 4);
    memcpy(rec + 16, &s4->sin_port, 2);
    rec[18] = 4;
  } else if (from->ss_family == AF_INET6 && al >= sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *s6 = (const void *)from;
    memcpy(rec, &s6->sin6_addr, 16);
    memcpy(rec + 16, &s6->sin6_port, 2);
    const uint8_t *a = rec;
    bool mapped = !a[0] && !a[1] && !a[2] && !a[3] && !a[4] && !a[5] && !a[6] && !a[7] && !a[8] && !a[9] &&
                  a[10] == 0xff && a[11] == 0xff;
    rec[18] = mapped ? 4 : 6;
  }
}

/* The gso_size of a UDP_GRO control message, 0 when there is none. */
static inline uint32_t gro_size(struct msghdr *h) {
  for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
    /* The int must also lie inside the buffer: cmsg_len is not checked against msg_controllen by CMSG_FIRSTHDR
     * (found by fuzz/udp-parse.c with a header that claims more than the buffer holds). */
    size_t at = (size_t)((const uint8_t *)CMSG_DATA(c) - (const uint8_t *)h->msg_control);
    if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO && c->cmsg_len >= CMSG_LEN(sizeof(int)) &&
        at + sizeof(int) <= h->msg_controllen) {
      int v;
      memcpy(&v, CMSG_DATA(c), sizeof v);
      return v > 0 ? (uint32_t)v : 0;
    }
  }
  return 0;
}

#endif

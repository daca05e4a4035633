/*
 * The floor of a userspace relay for bench/overlay.ts: a TAP with vnet
 * headers on one side and a TCP connection to the other host's relay on the
 * other, as the path through two vmlink daemons joined by a TCP link, with
 * nothing else: no switch, no framing beyond a 4-byte length per segment.
 *
 * TAP -> TCP: reads segments (virtio_net_hdr + frame, up to 64 KiB TSO
 * segments: TUNSETOFFLOAD CSUM|TSO4|TSO6|TSO_ECN as vmlink asks) until the
 * TAP is empty or the batch holds 1 MiB, each behind its length, and sends
 * the batch with one write; while the socket takes only part of it, more
 * segments are read behind the rest. TCP -> TAP: reads up to 2 MiB at a time
 * until the socket is empty, writes every whole record to the TAP where it
 * lies, and moves only a partial tail. poll(2), non-blocking, one thread.
 * Socket buffers: the kernel's autotuned ones, as vmlink's links keep
 * (TAP_RELAY_SOCKBUF=BYTES forces a size; 4 MiB made no difference here).
 *
 *   tap-relay IFNAME listen|connect IPV4 PORT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define HDR 12
#define SEG_MAX (HDR + 65536 + 64)
#define OUT_CAP (1 << 20)
#define IN_CAP (2 << 20)

static int tap_open(const char *name) {
  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
  if (fd < 0) return -1;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  int hdr = HDR;
  if (ioctl(fd, TUNSETIFF, &ifr) || ioctl(fd, TUNSETVNETHDRSZ, &hdr) ||
      ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN))
    return -1;
  return fd;
}

static int tcp_open(const char *mode, const char *ip, int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) return -1;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1, big = 0;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (strcmp(mode, "listen") == 0) {
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 1)) return -1;
    printf("ready\n");
    fflush(stdout);
    int c = accept(fd, NULL, NULL);
    close(fd);
    fd = c;
  } else {
    while (connect(fd, (struct sockaddr *)&a, sizeof a)) {
      if (errno != ECONNREFUSED) return -1;
      usleep(20000);
    }
    printf("ready\n");
    fflush(stdout);
  }
  if (fd < 0) return -1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (getenv("TAP_RELAY_SOCKBUF")) big = atoi(getenv("TAP_RELAY_SOCKBUF"));
  if (big > 0) { /* default 0: the kernel's autotuned buffers, as vmlink's links keep */
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

static uint8_t out[OUT_CAP + SEG_MAX + 4];
static uint8_t in[IN_CAP];

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: tap-relay IFNAME listen|connect IPV4 PORT\n");
    return 2;
  }
  int tap = tap_open(argv[1]);
  if (tap < 0) {
    perror("tap");
    return 1;
  }
  int tcp = tcp_open(argv[2], argv[3], atoi(argv[4]));
  if (tcp < 0) {
    perror("tcp");
    return 1;
  }
  size_t out_len = 0, out_off = 0; /* bytes batched; bytes of them already sent */
  size_t in_len = 0;
  unsigned long dropped = 0;
  for (;;) {
    struct pollfd p[2] = {{.fd = tap, .events = out_len < OUT_CAP ? POLLIN : 0},
                          {.fd = tcp, .events = POLLIN | (out_len ? POLLOUT : 0)}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    /* TAP -> TCP: a batch of segments, each behind its length. */
    if (out_len < OUT_CAP && (p[0].revents & POLLIN)) {
      while (out_len < OUT_CAP) {
        ssize_t n = read(tap, out + out_len + 4, SEG_MAX);
        if (n <= 0) break;
        uint32_t be = htonl((uint32_t)n);
        memcpy(out + out_len, &be, 4);
        out_len += 4 + (size_t)n;
      }
    }
    if (out_len > out_off) {
      ssize_t w = write(tcp, out + out_off, out_len - out_off);
      if (w < 0 && errno != EAGAIN && errno != EINTR) return 1;
      if (w > 0) out_off += (size_t)w;
      if (out_off == out_len) out_len = out_off = 0;
      else if (out_off >= OUT_CAP / 2) { /* keep room behind the unsent rest */
        memmove(out, out + out_off, out_len - out_off);
        out_len -= out_off;
        out_off = 0;
      }
    }
    /* TCP -> TAP: whole records where they lie; a partial tail moves to the front. */
    for (int more = (p[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0; more;) {
      size_t room = IN_CAP - in_len;
      ssize_t n = read(tcp, in + in_len, room);
      more = n > 0 && (size_t)n == room; /* the socket may hold more */
      if (n == 0) {
        if (dropped) fprintf(stderr, "tap-relay: %lu segments not written to the TAP\n", dropped);
        return 0;
      }
      if (n < 0 && errno != EAGAIN && errno != EINTR) return 1;
      if (n > 0) in_len += (size_t)n;
      size_t at = 0;
      while (in_len - at >= 4) {
        uint32_t len;
        memcpy(&len, in + at, 4);
        len = ntohl(len);
        if (len > SEG_MAX) return 1;
        if (in_len - at - 4 < len) break;
        if (write(tap, in + at + 4, len) < 0) dropped++; /* e.g. EIO while the interface is down */
        at += 4 + len;
      }
      memmove(in, in + at, in_len - at);
      in_len -= at;
    }
  }
}

/*
 * The floor of a userspace hop, for bench/latency.ts: accept one connection
 * on LISTEN, connect to CONNECT, and copy bytes both ways with poll(2),
 * read(2) and write(2). No framing, no switching. Each address is a unix
 * socket path, or tcp:PORT for TCP on 127.0.0.1 (TCP_NODELAY), as between
 * two vmlink daemons.
 *
 *   relay LISTEN CONNECT
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int unix_addr(struct sockaddr_un *a, const char *path) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof a->sun_path) return -1;
  strcpy(a->sun_path, path);
  return 0;
}

/* A socket for `spec` (a unix path or tcp:PORT) with its address in `a`; -1 on error. */
static int sock_for(const char *spec, struct sockaddr_storage *a, socklen_t *alen) {
  memset(a, 0, sizeof *a);
  if (strncmp(spec, "tcp:", 4) == 0) {
    struct sockaddr_in *in = (struct sockaddr_in *)a;
    in->sin_family = AF_INET;
    in->sin_port = htons((unsigned short)atoi(spec + 4));
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *alen = sizeof *in;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    return fd;
  }
  if (unix_addr((struct sockaddr_un *)a, spec)) return -1;
  *alen = sizeof(struct sockaddr_un);
  return socket(AF_UNIX, SOCK_STREAM, 0);
}

static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* fails harmlessly on a unix socket */
}

static int copy(int from, int to, char *buf, size_t len) {
  ssize_t n = read(from, buf, len);
  if (n <= 0) return -1;
  for (ssize_t off = 0; off < n;) {
    ssize_t w = write(to, buf + off, (size_t)(n - off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    off += w;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: relay LISTEN CONNECT\n");
    return 2;
  }
  struct sockaddr_storage la, ca;
  socklen_t llen, clen;
  int ls = sock_for(argv[1], &la, &llen);
  int right = sock_for(argv[2], &ca, &clen);
  if (strncmp(argv[1], "tcp:", 4) != 0) unlink(argv[1]);
  if (ls < 0 || right < 0 || bind(ls, (struct sockaddr *)&la, llen) || listen(ls, 1)) {
    perror("listen");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  int left = accept(ls, NULL, NULL);
  if (left < 0 || connect(right, (struct sockaddr *)&ca, clen)) {
    perror("connect");
    return 1;
  }
  nodelay(left);
  nodelay(right);
  static char buf[1 << 16];
  struct pollfd p[2] = {{.fd = left, .events = POLLIN}, {.fd = right, .events = POLLIN}};
  for (;;) {
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if ((p[0].revents & (POLLIN | POLLHUP | POLLERR)) && copy(left, right, buf, sizeof buf)) return 0;
    if ((p[1].revents & (POLLIN | POLLHUP | POLLERR)) && copy(right, left, buf, sizeof buf)) return 0;
  }
}

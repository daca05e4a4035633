/*
 * The floor of a userspace hop, for bench/latency.ts: accept one connection
 * on unix socket LISTEN, connect to unix socket CONNECT, and copy bytes both
 * ways with poll(2), read(2) and write(2). No framing, no switching.
 *
 *   relay LISTEN CONNECT
 */
#include <errno.h>
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
  struct sockaddr_un la, ca;
  if (unix_addr(&la, argv[1]) || unix_addr(&ca, argv[2])) return 2;
  int ls = socket(AF_UNIX, SOCK_STREAM, 0);
  unlink(argv[1]);
  if (ls < 0 || bind(ls, (struct sockaddr *)&la, sizeof la) || listen(ls, 1)) {
    perror("listen");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  int left = accept(ls, NULL, NULL);
  int right = socket(AF_UNIX, SOCK_STREAM, 0);
  if (left < 0 || right < 0 || connect(right, (struct sockaddr *)&ca, sizeof ca)) {
    perror("connect");
    return 1;
  }
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

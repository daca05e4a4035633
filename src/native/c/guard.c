/*
 * SIGBUS guard for front-end memory (guard.h). Async-signal safety: the
 * handler only reads the slot table (atomics), calls mmap(MAP_FIXED) and
 * write() (system calls, no locks) and siglongjmp()s to a guarded call that
 * holds no lock.
 */
#include "guard.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

/* Slots: 8 regions and a dirty log per front-end, for some hundreds of front-ends. */
#define VL_GUARD_SLOTS 4096

typedef struct {
  uintptr_t start; /* 0: free */
  size_t len;
  size_t page; /* granule to replace: the page size, or the huge page size of hugetlbfs */
  uint32_t faults;
} slot_t;

__thread sigjmp_buf *vl_guard_jb;

static slot_t slots[VL_GUARD_SLOTS];
static int high; /* slots in use are below this */
static uint32_t total;
static int efd = -1;
static struct sigaction old_action;
static bool installed;

static bool in_slot(const slot_t *s, uintptr_t a, uintptr_t *start, size_t *len, size_t *page) {
  uintptr_t st = __atomic_load_n(&s->start, __ATOMIC_ACQUIRE);
  if (st == 0) return false;
  size_t l = __atomic_load_n(&s->len, __ATOMIC_RELAXED);
  if (a < st || a - st >= l) return false;
  *start = st;
  *len = l;
  *page = __atomic_load_n(&s->page, __ATOMIC_RELAXED);
  return true;
}

/* Hands a fault that is not ours on: to the previous handler, else the default action (the process dies). */
static void not_ours(int sig, siginfo_t *info, void *uc) {
  if ((old_action.sa_flags & SA_SIGINFO) && old_action.sa_sigaction) {
    old_action.sa_sigaction(sig, info, uc);
    return;
  }
  if (old_action.sa_handler != SIG_DFL && old_action.sa_handler != SIG_IGN) {
    old_action.sa_handler(sig);
    return;
  }
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGBUS, &dfl, NULL);
  /* A fault repeats when the instruction runs again; a SIGBUS sent by kill() would not. */
  if (info->si_code <= 0) raise(SIGBUS);
}

static void on_sigbus(int sig, siginfo_t *info, void *uc) {
  int saved = errno;
  uintptr_t a = (uintptr_t)info->si_addr, start = 0;
  size_t len = 0, page = 0;
  int hit = -1;
  if (info->si_code == BUS_ADRERR) {
    int n = __atomic_load_n(&high, __ATOMIC_ACQUIRE);
    for (int i = 0; i < n; i++)
      if (in_slot(&slots[i], a, &start, &len, &page)) {
        hit = i;
        break;
      }
  }
  if (hit < 0) {
    errno = saved;
    not_ours(sig, info, uc);
    return;
  }
  /* Zeroed private memory over the granule that faulted, clamped to the mapping. */
  uintptr_t from = a & ~(uintptr_t)(page - 1), to = from + page;
  if (from < start) from = start;
  if (to > start + len) to = start + len;
  void *p = mmap((void *)from, to - from, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  if (p == MAP_FAILED) {
    errno = saved;
    not_ours(sig, info, uc);
    return;
  }
  __atomic_add_fetch(&slots[hit].faults, 1, __ATOMIC_RELAXED);
  __atomic_add_fetch(&total, 1, __ATOMIC_RELAXED);
  if (efd >= 0) {
    uint64_t one = 1;
    ssize_t w = write(efd, &one, sizeof one);
    (void)w; /* EAGAIN: the counter is already non-zero, the watcher wakes anyway */
  }
  errno = saved;
  sigjmp_buf *jb = vl_guard_jb;
  if (jb) siglongjmp(*jb, 1);
}

int vl_guard_install(void) {
  if (installed) return 0;
  efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (efd < 0) return -errno;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGBUS, &sa, &old_action) < 0) {
    int err = errno;
    close(efd);
    efd = -1;
    return -err;
  }
  installed = true;
  return 0;
}

int vl_guard_add(void *addr, size_t len, int fd) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  struct statfs fs;
  if (fstatfs(fd, &fs) == 0 && (unsigned long)fs.f_type == HUGETLBFS_MAGIC && fs.f_bsize > 0 &&
      ((size_t)fs.f_bsize & ((size_t)fs.f_bsize - 1)) == 0)
    page = (size_t)fs.f_bsize;
  for (int i = 0; i < VL_GUARD_SLOTS; i++) {
    slot_t *s = &slots[i];
    uintptr_t expect = 0;
    /* Claim with a placeholder start, fill in, then publish the real start. */
    if (!__atomic_compare_exchange_n(&s->start, &expect, (uintptr_t)1, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
      continue;
    __atomic_store_n(&s->len, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->page, page, __ATOMIC_RELAXED);
    __atomic_store_n(&s->faults, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&s->len, len, __ATOMIC_RELAXED);
    __atomic_store_n(&s->start, (uintptr_t)addr, __ATOMIC_RELEASE);
    int h = __atomic_load_n(&high, __ATOMIC_RELAXED);
    while (h < i + 1 && !__atomic_compare_exchange_n(&high, &h, i + 1, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
    }
    return i;
  }
  return -1;
}

void vl_guard_remove(int slot) {
  if (slot < 0 || slot >= VL_GUARD_SLOTS) return;
  __atomic_store_n(&slots[slot].start, (uintptr_t)0, __ATOMIC_RELEASE);
}

uint32_t vl_guard_faults(int slot) {
  if (slot < 0 || slot >= VL_GUARD_SLOTS) return 0;
  return __atomic_load_n(&slots[slot].faults, __ATOMIC_RELAXED);
}

uint32_t vl_guard_total(void) { return __atomic_load_n(&total, __ATOMIC_RELAXED); }

int vl_guard_fd(void) { return efd; }

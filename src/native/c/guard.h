/*
 * The guest-memory fault guard (guard.c). A front-end's memory file can be
 * shorter than the mapping (it shrank the file after SET_MEM_TABLE): an
 * access there raises SIGBUS. Mappings of front-end fds are registered here;
 * a SIGBUS inside one replaces the faulting page with anonymous zeroed memory
 * (so the access, and every later one, completes), counts the fault on that
 * mapping and signals an eventfd the JavaScript side watches. Inside a
 * guarded native call (VL_GUARD_BEGIN) it also jumps back to the call, which
 * stops at once. A SIGBUS anywhere else takes the process down as before.
 */
#ifndef VMLINK_GUARD_H
#define VMLINK_GUARD_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

/* The jump buffer of the guarded native call running on this thread, or NULL. */
extern __thread sigjmp_buf *vl_guard_jb;

/*
 * Runs the statement block after it with the guard armed: a guest-memory
 * fault inside jumps to `on_fault` (a label in the calling function).
 * Locals changed inside and read at `on_fault` must be volatile. The block
 * must call nothing that takes locks or allocates (only memory accesses and
 * pure functions): the jump abandons it half-way. One sigsetjmp without the
 * signal mask (no syscall): the handler runs with SA_NODEFER.
 */
#define VL_GUARD_BEGIN(on_fault)         \
  sigjmp_buf vl_jb_;                     \
  if (sigsetjmp(vl_jb_, 0) != 0) {       \
    vl_guard_jb = NULL;                  \
    goto on_fault;                       \
  }                                      \
  vl_guard_jb = &vl_jb_
#define VL_GUARD_END() vl_guard_jb = NULL

/* Installs the SIGBUS handler once (keeps the previous action to hand other faults to). 0 or -errno. */
int vl_guard_install(void);
/* Registers [addr, addr+len) mapped from `fd`; returns the slot, or -1 when every slot is taken (then unguarded). */
int vl_guard_add(void *addr, size_t len, int fd);
/* Forgets a slot (before the munmap). */
void vl_guard_remove(int slot);
/* Faults counted in a slot since it was added. */
uint32_t vl_guard_faults(int slot);
/* Faults counted in every slot since start. */
uint32_t vl_guard_total(void);
/* The eventfd written at every fault (non-blocking), or -1 before vl_guard_install. */
int vl_guard_fd(void);

#endif

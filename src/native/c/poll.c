/*
 * Poller: fd readiness from libuv's own loop (uv_poll), so JS learns that a
 * TAP or datagram socket is readable (or writable, on demand) without a
 * thread and without blocking the event loop.
 *
 * Lifetime: the JS object holds the struct. While started, a strong reference
 * keeps the object alive (the loop may call back at any time); stopped, it is
 * weak. close() (or the finalizer, when JS dropped a stopped poller) starts
 * uv_close, and the struct is freed once both the handle is closed and the JS
 * wrapper is gone, whichever happens last.
 */
#include "common.h"

#include <stdlib.h>
#include <uv.h>

typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_ref self; /* the JS Poller; strong while active */
  napi_ref cb;   /* (status, events) => void */
  napi_async_context actx;
  bool active, closing, closed, wrapper_gone;
} poller_t;

static void on_close(uv_handle_t *h) {
  poller_t *p = h->data;
  p->closed = true;
  if (p->wrapper_gone) free(p);
}

/* Drops the callback and starts closing the handle. Safe to call twice. */
static void poller_release(poller_t *p) {
  if (p->closing) return;
  p->closing = true;
  uv_poll_stop(&p->handle);
  if (p->active) {
    p->active = false;
    napi_reference_unref(p->env, p->self, NULL);
  }
  napi_delete_reference(p->env, p->cb);
  p->cb = NULL;
  napi_async_destroy(p->env, p->actx);
  uv_close((uv_handle_t *)&p->handle, on_close);
}

static void poller_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  poller_t *p = data;
  napi_delete_reference(env, p->self);
  p->self = NULL;
  p->wrapper_gone = true;
  p->active = false; /* only at environment teardown can a started poller be collected */
  if (!p->closing) poller_release(p);
  else if (p->closed) free(p);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  poller_t *p = h->data;
  if (p->closing || !p->cb) return;
  napi_env env = p->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, self, argv[2], result;
  if (napi_get_reference_value(env, p->cb, &cb) == napi_ok && napi_get_reference_value(env, p->self, &self) == napi_ok &&
      cb != NULL && self != NULL && napi_create_int32(env, status, &argv[0]) == napi_ok &&
      napi_create_int32(env, events, &argv[1]) == napi_ok) {
    /* napi_make_callback (not a bare napi_call_function): it runs the
     * process.nextTick and microtask queues afterwards, like any I/O callback. */
    if (napi_make_callback(env, p->actx, self, cb, 2, argv, &result) != napi_ok) {
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value err;
        napi_get_and_clear_last_exception(env, &err);
        napi_fatal_exception(env, err); /* to process 'uncaughtException', like a throwing I/O callback */
      }
    }
  }
  napi_close_handle_scope(env, scope);
}

static poller_t *this_poller(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv) {
  napi_value self;
  void *p = NULL;
  if (napi_get_cb_info(env, info, argc, argv, &self, NULL) != napi_ok || napi_unwrap(env, self, &p) != napi_ok || !p) {
    vl_throw_arg(env, "ERR_INVALID_THIS", "not a Poller");
    return NULL;
  }
  return p;
}

/* new Poller(fd, callback): callback(status, events) with status 0 or -errno, events a READABLE|WRITABLE mask. */
static napi_value poller_new(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], self;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, &self, NULL));
  int32_t fd;
  napi_valuetype t;
  if (!vl_get_int32(env, argv[0], "fd", &fd)) return NULL;
  if (napi_typeof(env, argv[1], &t) != napi_ok || t != napi_function)
    return vl_throw_arg(env, "ERR_INVALID_ARG_TYPE", "the \"callback\" argument must be a function");
  uv_loop_t *loop;
  NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
  poller_t *p = calloc(1, sizeof *p);
  if (!p) return vl_throw_errno(env, ENOMEM, "calloc", NULL);
  int r = uv_poll_init(loop, &p->handle, fd);
  if (r < 0) {
    free(p);
    return vl_throw_errno(env, -r, "uv_poll_init", NULL);
  }
  p->handle.data = p;
  p->env = env;
  napi_value name;
  if (napi_create_string_utf8(env, "vmlink:Poller", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, self, name, &p->actx) != napi_ok ||
      napi_create_reference(env, argv[1], 1, &p->cb) != napi_ok ||
      napi_wrap(env, self, p, poller_finalize, NULL, &p->self) != napi_ok) {
    /* Unreachable in practice; the handle must still be closed, never freed while in the loop. */
    p->wrapper_gone = true;
    p->closing = true;
    if (p->cb) napi_delete_reference(env, p->cb);
    uv_close((uv_handle_t *)&p->handle, on_close);
    vl_throw_napi(env, "Poller set-up");
    return NULL;
  }
  return self;
}

/* start(events): watch for READABLE and/or WRITABLE (replaces the previous mask). */
static napi_value poller_start(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  poller_t *p = this_poller(env, info, &argc, argv);
  if (!p) return NULL;
  int32_t events;
  if (!vl_get_int32(env, argv[0], "events", &events)) return NULL;
  if (p->closing) return vl_throw_errno(env, EBADF, "uv_poll_start", NULL);
  int r = uv_poll_start(&p->handle, events & (UV_READABLE | UV_WRITABLE | UV_DISCONNECT), on_poll);
  if (r < 0) return vl_throw_errno(env, -r, "uv_poll_start", NULL);
  if (!p->active) {
    p->active = true;
    napi_reference_ref(env, p->self, NULL);
  }
  return NULL;
}

/* stop(): no more callbacks until start(). */
static napi_value poller_stop(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  poller_t *p = this_poller(env, info, &argc, NULL);
  if (!p) return NULL;
  if (p->closing) return NULL;
  uv_poll_stop(&p->handle);
  if (p->active) {
    p->active = false;
    napi_reference_unref(env, p->self, NULL);
  }
  return NULL;
}

/* close(): stops for good and frees the handle (call before closing the fd). Idempotent. */
static napi_value poller_close(napi_env env, napi_callback_info info) {
  size_t argc = 0;
  poller_t *p = this_poller(env, info, &argc, NULL);
  if (p) poller_release(p);
  return NULL;
}

napi_status vl_init_poll(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"start", NULL, poller_start, NULL, NULL, NULL, napi_default, NULL},
      {"stop", NULL, poller_stop, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, poller_close, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value cls;
  napi_status s = napi_define_class(env, "Poller", NAPI_AUTO_LENGTH, poller_new, NULL, 3, methods, &cls);
  if (s != napi_ok) return s;
  if ((s = napi_set_named_property(env, exports, "Poller", cls)) != napi_ok) return s;
  if ((s = vl_export_int(env, exports, "READABLE", UV_READABLE)) != napi_ok) return s;
  if ((s = vl_export_int(env, exports, "WRITABLE", UV_WRITABLE)) != napi_ok) return s;
  return vl_export_int(env, exports, "DISCONNECT", UV_DISCONNECT);
}

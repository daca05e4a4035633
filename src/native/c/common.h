/*
 * Shared helpers of the vmlink native addon: argument access and errors that
 * look like Node's own (`code` = errno name, `errno` = -errno, `syscall`).
 */
#ifndef VMLINK_COMMON_H
#define VMLINK_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Calls an N-API function; on failure throws (if nothing is pending) and returns NULL. */
#define NAPI_CALL(env, call)                                       \
  do {                                                             \
    if ((call) != napi_ok) {                                       \
      vl_throw_napi(env, #call);                                   \
      return NULL;                                                 \
    }                                                              \
  } while (0)

/* Gets exactly `n` arguments into argv (missing ones are `undefined`). */
#define GET_ARGS(env, info, n)                                          \
  size_t argc = (n);                                                    \
  napi_value argv[(n) > 0 ? (n) : 1];                                   \
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL))

/* Throws an Error like Node's UVException: "ENOENT: no such file or directory, open 'x'". */
napi_value vl_throw_errno(napi_env env, int err, const char *syscall, const char *path);
/* Throws a TypeError with code ERR_INVALID_ARG_TYPE or ERR_INVALID_ARG_VALUE. */
napi_value vl_throw_arg(napi_env env, const char *code, const char *msg);
/* Throws for a failed N-API call unless an exception is already pending. */
void vl_throw_napi(napi_env env, const char *what);

/* Argument readers: return false after throwing a TypeError. */
bool vl_get_int32(napi_env env, napi_value v, const char *name, int32_t *out);
bool vl_get_uint32(napi_env env, napi_value v, const char *name, uint32_t *out);
bool vl_get_double(napi_env env, napi_value v, const char *name, double *out);
bool vl_get_bool(napi_env env, napi_value v, const char *name, bool *out);
/* Reads a string into buf (NUL-terminated); fails when it does not fit. */
bool vl_get_string(napi_env env, napi_value v, const char *name, char *buf, size_t size);
/* A Buffer / Uint8Array: its bytes. */
bool vl_get_bytes(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len);
/* A Uint32Array (or Int32Array when `is_signed`): its elements. */
bool vl_get_u32s(napi_env env, napi_value v, const char *name, bool is_signed, uint32_t **data, size_t *len);
/* True when v is undefined or null. */
bool vl_is_nullish(napi_env env, napi_value v);

/* Registration of each module's functions (one per source file). */
napi_status vl_init_tap(napi_env env, napi_value exports);
napi_status vl_init_io(napi_env env, napi_value exports);
napi_status vl_init_unix(napi_env env, napi_value exports);
napi_status vl_init_unix_fds(napi_env env, napi_value exports);
napi_status vl_init_mem(napi_env env, napi_value exports);
napi_status vl_init_poll(napi_env env, napi_value exports);
napi_status vl_init_packet(napi_env env, napi_value exports);
napi_status vl_init_udp(napi_env env, napi_value exports);
napi_status vl_init_udp_batch(napi_env env, napi_value exports);
napi_status vl_init_csum(napi_env env, napi_value exports);
napi_status vl_init_file(napi_env env, napi_value exports);
napi_status vl_init_vring(napi_env env, napi_value exports);

/* Adds `fn` to exports as `name`. */
napi_status vl_export(napi_env env, napi_value exports, const char *name, napi_callback fn);
/* Adds an integer constant to exports. */
napi_status vl_export_int(napi_env env, napi_value exports, const char *name, int64_t value);

#endif

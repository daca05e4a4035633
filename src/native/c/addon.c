/*
 * vmlink native addon: module init and the shared helpers of common.h.
 * Only syscalls Node lacks live here; everything else stays in TypeScript.
 */
#include "common.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

static void set_prop_str(napi_env env, napi_value obj, const char *key, const char *val) {
  napi_value v;
  if (napi_create_string_utf8(env, val, NAPI_AUTO_LENGTH, &v) == napi_ok) napi_set_named_property(env, obj, key, v);
}

napi_value vl_throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  const char *name = strerrorname_np(err);
  char code[32];
  snprintf(code, sizeof code, "%s", name ? name : "EUNKNOWN");
  /* Node's wording: lower-case description ("no such file or directory"). */
  char desc[128];
  snprintf(desc, sizeof desc, "%s", strerror(err));
  desc[0] = (char)tolower((unsigned char)desc[0]);
  char msg[512];
  if (path)
    snprintf(msg, sizeof msg, "%s: %s, %s '%s'", code, desc, syscall, path);
  else
    snprintf(msg, sizeof msg, "%s: %s, %s", code, desc, syscall);
  napi_value m, e, no;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m) != napi_ok) return NULL;
  if (napi_create_error(env, NULL, m, &e) != napi_ok) return NULL;
  set_prop_str(env, e, "code", code);
  set_prop_str(env, e, "syscall", syscall);
  if (path) set_prop_str(env, e, "path", path);
  if (napi_create_int32(env, -err, &no) == napi_ok) napi_set_named_property(env, e, "errno", no);
  napi_throw(env, e);
  return NULL;
}

napi_value vl_throw_arg(napi_env env, const char *code, const char *msg) {
  napi_throw_type_error(env, code, msg);
  return NULL;
}

void vl_throw_napi(napi_env env, const char *what) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) return;
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info);
  char msg[256];
  snprintf(msg, sizeof msg, "N-API call failed: %s (%s)", what,
           info && info->error_message ? info->error_message : "unknown");
  napi_throw_error(env, "ERR_NATIVE", msg);
}

static bool bad_arg(napi_env env, const char *name, const char *want) {
  char msg[128];
  snprintf(msg, sizeof msg, "the \"%s\" argument must be %s", name, want);
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return false;
}

bool vl_get_int32(napi_env env, napi_value v, const char *name, int32_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return bad_arg(env, name, "a number");
  double d;
  napi_get_value_double(env, v, &d);
  if (d != (double)(int32_t)d) return bad_arg(env, name, "a 32-bit integer");
  *out = (int32_t)d;
  return true;
}

bool vl_get_uint32(napi_env env, napi_value v, const char *name, uint32_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return bad_arg(env, name, "a number");
  double d;
  napi_get_value_double(env, v, &d);
  if (d < 0 || d > 4294967295.0 || d != (double)(uint32_t)d) return bad_arg(env, name, "an unsigned 32-bit integer");
  *out = (uint32_t)d;
  return true;
}

bool vl_get_double(napi_env env, napi_value v, const char *name, double *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return bad_arg(env, name, "a number");
  return napi_get_value_double(env, v, out) == napi_ok;
}

bool vl_get_bool(napi_env env, napi_value v, const char *name, bool *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_boolean) return bad_arg(env, name, "a boolean");
  return napi_get_value_bool(env, v, out) == napi_ok;
}

bool vl_get_string(napi_env env, napi_value v, const char *name, char *buf, size_t size) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) return bad_arg(env, name, "a string");
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return bad_arg(env, name, "a string");
  if (len + 1 > size) {
    char msg[128];
    snprintf(msg, sizeof msg, "the \"%s\" argument is too long (%zu bytes, at most %zu)", name, len, size - 1);
    napi_throw_range_error(env, "ERR_INVALID_ARG_VALUE", msg);
    return false;
  }
  return napi_get_value_string_utf8(env, v, buf, size, &len) == napi_ok;
}

bool vl_get_bytes(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len) {
  bool is_ta = false;
  napi_is_typedarray(env, v, &is_ta);
  if (!is_ta) return bad_arg(env, name, "a Buffer or Uint8Array");
  napi_typedarray_type type;
  void *p = NULL;
  if (napi_get_typedarray_info(env, v, &type, len, &p, NULL, NULL) != napi_ok || type != napi_uint8_array)
    return bad_arg(env, name, "a Buffer or Uint8Array");
  *data = p;
  return true;
}

bool vl_get_u32s(napi_env env, napi_value v, const char *name, bool is_signed, uint32_t **data, size_t *len) {
  const char *want = is_signed ? "an Int32Array" : "a Uint32Array";
  bool is_ta = false;
  napi_is_typedarray(env, v, &is_ta);
  if (!is_ta) return bad_arg(env, name, want);
  napi_typedarray_type type;
  void *p = NULL;
  if (napi_get_typedarray_info(env, v, &type, len, &p, NULL, NULL) != napi_ok ||
      type != (is_signed ? napi_int32_array : napi_uint32_array))
    return bad_arg(env, name, want);
  *data = p;
  return true;
}

bool vl_is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return false;
  return t == napi_undefined || t == napi_null;
}

napi_status vl_export(napi_env env, napi_value exports, const char *name, napi_callback fn) {
  napi_value f;
  napi_status s = napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f);
  if (s != napi_ok) return s;
  return napi_set_named_property(env, exports, name, f);
}

napi_status vl_export_int(napi_env env, napi_value exports, const char *name, int64_t value) {
  napi_value v;
  napi_status s = napi_create_int64(env, value, &v);
  if (s != napi_ok) return s;
  return napi_set_named_property(env, exports, name, v);
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  if (vl_init_tap(env, exports) != napi_ok || vl_init_io(env, exports) != napi_ok ||
      vl_init_unix(env, exports) != napi_ok || vl_init_unix_fds(env, exports) != napi_ok ||
      vl_init_mem(env, exports) != napi_ok ||
      vl_init_poll(env, exports) != napi_ok || vl_init_packet(env, exports) != napi_ok ||
      vl_init_udp(env, exports) != napi_ok || vl_init_udp_batch(env, exports) != napi_ok ||
      vl_init_csum(env, exports) != napi_ok ||
      vl_init_file(env, exports) != napi_ok ||
      vl_init_vring(env, exports) != napi_ok) {
    vl_throw_napi(env, "module init");
    return NULL;
  }
  return exports;
}

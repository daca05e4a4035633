/*
 * The fast path of a split virtqueue (virtio 1.2 §2.7) over mmapped guest
 * memory: one call moves a batch of transmitted frames or one received frame,
 * instead of a dozen JavaScript reads per descriptor.
 *
 * It takes only the common, simple case: a transmit chain of one descriptor
 * (header + frame) or two (a header-sized descriptor, then the frame), a
 * receive chain of one device-writable descriptor big enough for header and
 * frame, or with mergeable buffers several such chains filled in order.
 * Everything else (indirect tables, longer chains, bad indexes,
 * addresses outside memory, wrong directions, odd lengths) makes it stop
 * BEFORE taking that head, and the TypeScript walk (virtqueue.ts) takes the
 * same head and refuses or accepts it with its own checks and messages. So the
 * validation semantics are those of virtqueue.ts: this code never accepts what
 * the TypeScript refuses (every address and index is checked here too).
 *
 * Ring indexes the driver changes (available index) are read with one 16-bit
 * volatile load; descriptors are copied out once before they are checked (the
 * guest may change them meanwhile). The used index is stored with a full
 * barrier after the used elements (§2.7.8.2); transmit leaves publishing to
 * the caller, which first hands the frames (still in guest memory) on.
 */
#include "common.h"

#include <stdlib.h>
#include <string.h>

#define VL_MAX_REGIONS 8
#define VL_NET_HDR 12
#define VL_DESC_F_NEXT 1
#define VL_DESC_F_WRITE 2
/* io[2] bit: mergeable receive buffers (VIRTIO_NET_F_MRG_RXBUF): a frame may fill several chains. */
#define VL_IO_MRG 1
/* Most receive chains one frame fills on the fast path (a 64 KiB frame in 1 KiB buffers); more go to the walk. */
#define VL_MRG_MAX 80

typedef struct {
  uint8_t *base;
  uint64_t gpa;
  uint64_t size;
} vl_region_t;

typedef struct {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
} vl_desc_t;

typedef struct {
  vl_region_t r[VL_MAX_REGIONS];
  uint32_t nr;
  uint32_t num;
  uint8_t *desc;
  uint8_t *avail; /* flags, idx, ring[num], used_event */
  uint8_t *used;  /* flags, idx, ring[num] of {id, len}, avail_event */
  /*
   * io[0] = next available slot (free-running u16), io[1] = next used slot: shared with the Virtqueue object;
   * io[2] (when io has 3 elements) = receive flags: VL_IO_MRG (the guest negotiated MRG_RXBUF).
   */
  uint32_t *io;
  size_t io_len;
  bool attached;
} vl_vring_t;

static void vring_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static bool get_vring(napi_env env, napi_value v, vl_vring_t **out) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "the \"ring\" argument must be a handle from vringNew()");
    return false;
  }
  *out = p;
  return true;
}

/* vringNew(io: Uint32Array(>=2)) -> handle. `io` holds the ring's two indexes (and flags); keep it alive with the handle. */
static napi_value vring_new(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  uint32_t *io;
  size_t n;
  if (!vl_get_u32s(env, argv[0], "io", false, &io, &n)) return NULL;
  if (n < 2) return vl_throw_arg(env, "ERR_INVALID_ARG_VALUE", "io must hold at least 2 elements");
  vl_vring_t *q = calloc(1, sizeof *q);
  if (!q) return vl_throw_errno(env, ENOMEM, "calloc", NULL);
  q->io = io;
  q->io_len = n;
  napi_value h;
  if (napi_create_external(env, q, vring_finalize, NULL, &h) != napi_ok) {
    free(q);
    vl_throw_napi(env, "napi_create_external");
    return NULL;
  }
  return h;
}

/*
 * vringAttach(ring, regions: Buffer[], gpas: Float64Array, num, desc, avail, used)
 * Points the ring at guest memory: region views with their guest-physical
 * starts, and the three ring parts as Buffers (already bounds-checked by the
 * caller). vringAttach(ring) with no regions detaches. Call again before the
 * memory is unmapped.
 */
static napi_value vring_attach(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 7);
  vl_vring_t *q;
  if (!get_vring(env, argv[0], &q)) return NULL;
  q->attached = false;
  if (vl_is_nullish(env, argv[1])) return NULL;
  uint32_t nr = 0;
  NAPI_CALL(env, napi_get_array_length(env, argv[1], &nr));
  if (nr == 0 || nr > VL_MAX_REGIONS) return vl_throw_arg(env, "ERR_INVALID_ARG_VALUE", "1 to 8 regions");
  void *gp = NULL;
  size_t glen = 0;
  napi_typedarray_type t;
  if (napi_get_typedarray_info(env, argv[2], &t, &glen, &gp, NULL, NULL) != napi_ok || t != napi_float64_array ||
      glen < nr)
    return vl_throw_arg(env, "ERR_INVALID_ARG_TYPE", "gpas must be a Float64Array with one start per region");
  for (uint32_t i = 0; i < nr; i++) {
    napi_value v;
    NAPI_CALL(env, napi_get_element(env, argv[1], i, &v));
    size_t len;
    if (!vl_get_bytes(env, v, "region", &q->r[i].base, &len)) return NULL;
    q->r[i].size = len;
    q->r[i].gpa = (uint64_t)((double *)gp)[i];
  }
  uint32_t num;
  if (!vl_get_uint32(env, argv[3], "num", &num)) return NULL;
  size_t dl, al, ul;
  if (!vl_get_bytes(env, argv[4], "desc", &q->desc, &dl) || !vl_get_bytes(env, argv[5], "avail", &q->avail, &al) ||
      !vl_get_bytes(env, argv[6], "used", &q->used, &ul))
    return NULL;
  if (num == 0 || num > 32768 || dl < 16 * (size_t)num || al < 6 + 2 * (size_t)num || ul < 6 + 8 * (size_t)num)
    return vl_throw_arg(env, "ERR_INVALID_ARG_VALUE", "ring parts smaller than the queue size needs");
  q->nr = nr;
  q->num = num;
  q->attached = true;
  return NULL;
}

/* Pointer to guest-physical [gpa, gpa+len) when it lies inside one region, else NULL. */
static uint8_t *gpa_ptr(const vl_vring_t *q, uint64_t gpa, uint32_t len, uint32_t *region, uint64_t *off) {
  for (uint32_t i = 0; i < q->nr; i++) {
    const vl_region_t *r = &q->r[i];
    if (gpa < r->gpa) continue;
    uint64_t o = gpa - r->gpa;
    if (o > r->size || len > r->size - o) continue;
    *region = i;
    *off = o;
    return r->base + o;
  }
  return NULL;
}

static uint16_t load16(const uint8_t *p) { return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE); }

/* Available entries not yet taken, or -1 when the index ran more than a queue size ahead (the caller's check reports it). */
static int32_t avail_count(const vl_vring_t *q) {
  uint16_t idx = load16(q->avail + 2);
  uint32_t n = (uint16_t)(idx - (uint16_t)q->io[0]);
  return n > q->num ? -1 : (int32_t)n;
}

/*
 * Argument readers for the per-frame calls: one N-API call each (the generic
 * readers of common.h make two or three); a wrong type still throws.
 */
static bool fast_u32(napi_env env, napi_value v, const char *name, uint32_t *out) {
  if (napi_get_value_uint32(env, v, out) == napi_ok) return true;
  return vl_get_uint32(env, v, name, out);
}

static bool fast_bytes(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len) {
  napi_typedarray_type t;
  void *p = NULL;
  if (napi_get_typedarray_info(env, v, &t, len, &p, NULL, NULL) == napi_ok && t == napi_uint8_array) {
    *data = p;
    return true;
  }
  return vl_get_bytes(env, v, name, data, len);
}

/* A transmitted virtio_net_hdr that asks for no offload (no NEEDS_CSUM, gso_type NONE): the frame goes on without metadata. */
static bool plain_hdr(const uint8_t *h) { return (h[0] & 1) == 0 && h[1] == 0; }

static void read_desc(const vl_vring_t *q, uint32_t i, vl_desc_t *d) {
  memcpy(d, q->desc + 16 * (size_t)i, sizeof *d);
}

static void push_used(vl_vring_t *q, uint32_t head, uint32_t len) {
  uint32_t slot = q->io[1] % q->num;
  uint32_t e[2] = {head, len};
  memcpy(q->used + 4 + 8 * (size_t)slot, e, 8);
  q->io[1] = (q->io[1] + 1) & 0xffff;
}

static void publish(vl_vring_t *q) { __atomic_store_n((uint16_t *)(q->used + 2), (uint16_t)q->io[1], __ATOMIC_SEQ_CST); }

/*
 * vringTx(ring, max, minLen, maxLen, out: Uint32Array) -> frames taken
 * Takes up to `max` simple transmit chains whose frame (header excluded) is
 * minLen..maxLen bytes and whose header asks for no offload; for frame k, out[3k..3k+2] = region, offset of the
 * frame in that region, length. Used elements are written (length 0), not
 * published. Stops before the first chain it does not take.
 */
static napi_value vring_tx(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 5);
  vl_vring_t *q;
  uint32_t max, min_len, max_len, *out;
  size_t out_len;
  if (!get_vring(env, argv[0], &q) || !vl_get_uint32(env, argv[1], "max", &max) ||
      !vl_get_uint32(env, argv[2], "minLen", &min_len) || !vl_get_uint32(env, argv[3], "maxLen", &max_len) ||
      !vl_get_u32s(env, argv[4], "out", false, &out, &out_len))
    return NULL;
  int32_t taken = 0;
  if (q->attached) {
    int32_t n = avail_count(q);
    if (n > (int32_t)max) n = (int32_t)max;
    if ((size_t)n > out_len / 3) n = (int32_t)(out_len / 3);
    for (; taken < n; taken++) {
      uint32_t slot = q->io[0] % q->num;
      uint16_t head;
      memcpy(&head, q->avail + 4 + 2 * (size_t)slot, 2);
      if (head >= q->num) break;
      vl_desc_t d;
      read_desc(q, head, &d);
      uint32_t region;
      uint64_t off;
      uint32_t flen;
      if (d.flags == 0) {
        if (d.len < VL_NET_HDR + min_len || d.len - VL_NET_HDR > max_len) break;
        const uint8_t *h = gpa_ptr(q, d.addr, d.len, &region, &off);
        if (!h || !plain_hdr(h)) break;
        off += VL_NET_HDR;
        flen = d.len - VL_NET_HDR;
      } else if (d.flags == VL_DESC_F_NEXT && d.len == VL_NET_HDR && d.next < q->num) {
        vl_desc_t f;
        read_desc(q, d.next, &f);
        if (f.flags != 0 || f.len < min_len || f.len > max_len) break;
        const uint8_t *h = gpa_ptr(q, d.addr, d.len, &region, &off);
        if (!h || !plain_hdr(h)) break;
        if (!gpa_ptr(q, f.addr, f.len, &region, &off)) break;
        flen = f.len;
      } else {
        break;
      }
      out[3 * taken] = region;
      out[3 * taken + 1] = (uint32_t)off;
      out[3 * taken + 2] = flen;
      q->io[0] = (q->io[0] + 1) & 0xffff;
      push_used(q, head, 0);
    }
  }
  napi_value r;
  NAPI_CALL(env, napi_create_int32(env, taken, &r));
  return r;
}

/* Results of vringRx. */
#define VL_RX_OK 0
#define VL_RX_EMPTY 1
#define VL_RX_SLOW 2

/*
 * vringRx(ring, buf, off, len) -> VL_RX_*
 * Copies a 12-byte header (all zero but num_buffers) and buf[off, off+len)
 * into the next receive chain when it is one device-writable descriptor with
 * room for both (with MRG_RXBUF: into as many such chains as needed), writes
 * the used elements and publishes them. EMPTY: not enough buffers. SLOW: the
 * next chains (or the ring state) need the TypeScript path.
 */
static int32_t rx_one(vl_vring_t *q, const uint8_t *buf, uint32_t len);

static napi_value vring_rx(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 4);
  vl_vring_t *q;
  uint8_t *buf;
  size_t blen;
  uint32_t off, len;
  if (!get_vring(env, argv[0], &q) || !fast_bytes(env, argv[1], "buf", &buf, &blen) ||
      !fast_u32(env, argv[2], "off", &off) || !fast_u32(env, argv[3], "len", &len))
    return NULL;
  if ((size_t)off + len > blen) return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "off + len beyond the buffer");
  napi_value r;
  NAPI_CALL(env, napi_create_int32(env, rx_one(q, buf + off, len), &r));
  return r;
}

/*
 * The source of vringRxBatch: one Buffer (a transmitting guest's region view,
 * set for the length of one transmit batch), held by a reference.
 */
static struct {
  uint8_t *data;
  size_t len;
  napi_ref ref;
} rx_src;

/* vringSource(buf | undefined): sets (or clears) the source of vringRxBatch. */
static napi_value vring_source(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  if (rx_src.ref) {
    napi_delete_reference(env, rx_src.ref);
    rx_src.ref = NULL;
  }
  rx_src.data = NULL;
  rx_src.len = 0;
  if (vl_is_nullish(env, argv[0])) return NULL;
  uint8_t *data;
  size_t len;
  if (!vl_get_bytes(env, argv[0], "buf", &data, &len)) return NULL;
  NAPI_CALL(env, napi_create_reference(env, argv[0], 1, &rx_src.ref));
  rx_src.data = data;
  rx_src.len = len;
  return NULL;
}

static int32_t rx_one_unpublished(vl_vring_t *q, const uint8_t *src, uint32_t len, int32_t *avail);

static int32_t rx_one(vl_vring_t *q, const uint8_t *src, uint32_t len) {
  int32_t avail = -2;
  int32_t res = rx_one_unpublished(q, src, len, &avail);
  if (res == VL_RX_OK) publish(q);
  return res;
}

/*
 * vringRxBatch(ring, frames: Uint32Array, count) -> frames done
 * Like vringRx from the source buffer for frames[2k] = offset, frames[2k+1] = length in the
 * source buffer, k < count, in order; the used index is published once at the
 * end. Stops at the first frame that is not OK (the caller takes it).
 */
static napi_value vring_rx_batch(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 3);
  vl_vring_t *q;
  uint32_t *fr, count;
  size_t flen;
  if (!get_vring(env, argv[0], &q) || !vl_get_u32s(env, argv[1], "frames", false, &fr, &flen) ||
      !fast_u32(env, argv[2], "count", &count))
    return NULL;
  if ((size_t)count * 2 > flen) return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "count beyond the frames array");
  uint32_t done = 0;
  int32_t avail = -2; /* read once, then counted down: the guest's index is a contended cache line */
  for (; done < count; done++) {
    uint32_t off = fr[2 * done], len = fr[2 * done + 1];
    if (!rx_src.data || (size_t)off + len > rx_src.len)
      return vl_throw_arg(env, "ERR_OUT_OF_RANGE", "off + len beyond the source buffer (or no source)");
    if (rx_one_unpublished(q, rx_src.data + off, len, &avail) != VL_RX_OK) break;
  }
  if (done > 0) publish(q);
  napi_value r;
  NAPI_CALL(env, napi_create_uint32(env, done, &r));
  return r;
}

/*
 * One frame into the receive ring, used elements written but not published.
 * Without MRG_RXBUF: one chain that is one writable descriptor with room for
 * header + frame. With it (virtio 1.2 §5.1.6.4.2): as many chains as the frame
 * needs, each one writable descriptor (what a Linux guest posts), filled in
 * order, num_buffers in the header, each used length the bytes written into
 * that chain. EMPTY when the simple chains available are too few for the
 * frame (the walk would wait for more too); SLOW for anything else, before a
 * single byte or index is changed. *avail: the available chains not yet
 * taken as last read (-2: not read yet); read again only when they seem
 * too few, and counted down by what this frame takes.
 */
static int32_t rx_one_unpublished(vl_vring_t *q, const uint8_t *src, uint32_t len, int32_t *avail) {
  if (!q->attached) return VL_RX_SLOW;
  int32_t n = *avail;
  if (n < VL_MRG_MAX) n = *avail = avail_count(q);
  if (n == 0) return VL_RX_EMPTY;
  if (n < 0) return VL_RX_SLOW;
  bool mrg = q->io_len > 2 && (q->io[2] & VL_IO_MRG) != 0;
  uint64_t need = VL_NET_HDR + (uint64_t)len;
  uint8_t *ptr[VL_MRG_MAX];
  uint32_t cap[VL_MRG_MAX];
  uint16_t heads[VL_MRG_MAX];
  uint64_t have = 0;
  uint32_t h = 0;
  while (have < need) {
    if (h == (uint32_t)n) {
      /* Every buffer the guest can post is too small: the walk drops and counts it. */
      return mrg && (uint32_t)n < q->num ? VL_RX_EMPTY : VL_RX_SLOW;
    }
    if (h == VL_MRG_MAX || (h == 1 && !mrg)) return VL_RX_SLOW;
    uint16_t head;
    memcpy(&head, q->avail + 4 + 2 * (size_t)((q->io[0] + h) % q->num), 2);
    if (head >= q->num) return VL_RX_SLOW;
    vl_desc_t d;
    read_desc(q, head, &d);
    uint32_t region;
    uint64_t goff;
    if (d.flags != VL_DESC_F_WRITE || d.len == 0 || (ptr[h] = gpa_ptr(q, d.addr, d.len, &region, &goff)) == NULL)
      return VL_RX_SLOW;
    cap[h] = d.len;
    heads[h] = head;
    have += d.len;
    h++;
  }
  *avail = n - (int32_t)h;
  uint8_t hdr[VL_NET_HDR] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, (uint8_t)h, (uint8_t)(h >> 8)};
  if (h == 1) {
    /* The common case: one buffer; the header's size is known, so its copy is inlined. */
    memcpy(ptr[0], hdr, VL_NET_HDR);
    memcpy(ptr[0] + VL_NET_HDR, src, len);
    push_used(q, heads[0], (uint32_t)need);
    q->io[0] = (q->io[0] + 1) & 0xffff;
    return VL_RX_OK;
  }
  /* Header then frame, across the chains in order. */
  const uint8_t *from = hdr;
  uint32_t from_left = VL_NET_HDR;
  bool in_hdr = true;
  uint64_t left = need;
  for (uint32_t k = 0; k < h; k++) {
    uint32_t w = left < cap[k] ? (uint32_t)left : cap[k];
    uint8_t *to = ptr[k];
    uint32_t room = w;
    while (room > 0) {
      uint32_t c = from_left < room ? from_left : room;
      memcpy(to, from, c);
      to += c;
      room -= c;
      from += c;
      from_left -= c;
      if (from_left == 0 && in_hdr) {
        in_hdr = false;
        from = src;
        from_left = len;
      }
    }
    push_used(q, heads[k], w);
    left -= w;
  }
  q->io[0] = (q->io[0] + h) & 0xffff;
  return VL_RX_OK;
}

/* vringPublish(ring): stores the used index (after the used elements vringTx wrote). */
static napi_value vring_publish(napi_env env, napi_callback_info info) {
  GET_ARGS(env, info, 1);
  vl_vring_t *q;
  if (!get_vring(env, argv[0], &q)) return NULL;
  if (q->attached) publish(q);
  return NULL;
}

napi_status vl_init_vring(napi_env env, napi_value exports) {
  napi_status s;
  if ((s = vl_export(env, exports, "vringNew", vring_new)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "vringAttach", vring_attach)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "vringTx", vring_tx)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "vringRx", vring_rx)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "vringSource", vring_source)) != napi_ok) return s;
  if ((s = vl_export(env, exports, "vringRxBatch", vring_rx_batch)) != napi_ok) return s;
  return vl_export(env, exports, "vringPublish", vring_publish);
}

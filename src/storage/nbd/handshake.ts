/**
 * Server side of the fixed newstyle handshake (proto.md "Newstyle
 * negotiation", "Option haggling"). A state machine fed Buffers: it queues
 * the bytes to send in {@link ServerHandshake.out} and ends in `done` (with
 * the negotiated result and any bytes that already belong to the
 * transmission phase) or `closed` (with a reason). No sockets: the unit
 * tests drive it with hex fixtures. The byte layouts of what it sends and
 * the parsing of option data are in handshake-replies.ts.
 */
import type { ExportRegistry, NbdExport } from '../exports.js';
import {
  BASE_ALLOCATION,
  BASE_ALLOCATION_ID,
  FLAG_C_FIXED_NEWSTYLE,
  FLAG_C_NO_ZEROES,
  IHAVEOPT,
  INFO,
  OPT,
  REP,
} from './constants.js';
import {
  exportNameReply,
  greeting,
  infoBlockSize,
  infoExport,
  infoString,
  listEntry,
  metaContextEntry,
  optionReplyHeader,
  parseInfoRequest,
  parseMetaRequest,
  transmissionFlags,
} from './handshake-replies.js';
import type { NbdTlsMode } from './tls.js';

/** Largest option payload we read; longer ones are skipped and answered NBD_REP_ERR_TOO_BIG. */
export const MAX_OPTION_LEN = 64 * 1024;
/** Most options one client may send before we give up on it. */
export const MAX_OPTIONS = 1024;

/** What the handshake settled. */
export interface Negotiated {
  export: NbdExport;
  /** NBD_OPT_STRUCTURED_REPLY was acknowledged. */
  structuredReplies: boolean;
  /** base:allocation was selected for this export (NBD_CMD_BLOCK_STATUS allowed). */
  baseAllocation: boolean;
  /** Transmission flags sent to the client. */
  flags: number;
}

/**
 * `starttls`: NBD_REP_ACK to STARTTLS is queued; the caller sends it, upgrades
 * the socket and calls {@link ServerHandshake.tlsStarted} (proto.md "TLS support").
 */
type State = 'client-flags' | 'option-header' | 'option-data' | 'option-skip' | 'starttls' | 'done' | 'closed';

export class ServerHandshake {
  /** Bytes to send to the client, in order; the caller drains it after each feed. */
  out: Buffer[] = [];
  state: State = 'client-flags';
  /** Set when state is `done`. */
  result: Negotiated | undefined;
  /** Set when state is `closed`: why (for one log line). `clean` when the client aborted politely. */
  closeReason = '';
  clean = false;
  /** Bytes received after the handshake ended (the first transmission requests). */
  rest: Buffer = Buffer.alloc(0);

  #exports: ExportRegistry;
  /** The client's IP address for export access policies; undefined for unix-socket clients. */
  #peer: string | undefined;
  #buf: Buffer = Buffer.alloc(0);
  #noZeroes = false;
  #structured = false;
  #metaExport: string | undefined;
  #opt = 0;
  #optLen = 0;
  #options = 0;
  /** TLS the server offers; undefined: none (NOTLS mode). */
  #tlsMode: NbdTlsMode | undefined;
  /** The session runs over TLS. */
  #tls = false;

  /**
   * @param peerAddress the client's IP address for access policies (undefined: unix socket)
   * @param tlsMode what TLS the server offers: FORCEDTLS (`required`), SELECTIVETLS (`optional`), none (undefined)
   */
  constructor(exports: ExportRegistry, peerAddress?: string, tlsMode?: NbdTlsMode) {
    this.#exports = exports;
    this.#peer = peerAddress;
    this.#tlsMode = tlsMode;
    this.out.push(greeting());
  }

  /** True once TLS is up on this session. */
  get tls(): boolean {
    return this.#tls;
  }

  /**
   * The socket now runs TLS: negotiation starts over (proto.md: nothing
   * negotiated in plain text is kept, so structured replies and metadata
   * contexts must be asked again) and bytes can be fed again.
   */
  tlsStarted(): void {
    if (this.state !== 'starttls') return;
    this.#tls = true;
    this.#structured = false;
    this.#metaExport = undefined;
    this.state = 'option-header';
  }

  /** Feeds received bytes. Never throws for anything the peer sends. */
  feed(chunk: Buffer): void {
    if (this.state === 'starttls') {
      // The client must wait for our ACK and start TLS: plain bytes now break the protocol.
      this.#close('client sent plain data after NBD_OPT_STARTTLS instead of a TLS handshake');
      return;
    }
    if (this.state === 'done' || this.state === 'closed') {
      if (this.state === 'done') this.rest = Buffer.concat([this.rest, chunk]);
      return;
    }
    this.#buf = this.#buf.length ? Buffer.concat([this.#buf, chunk]) : chunk;
    for (;;) {
      const s = this.state as State;
      if (s === 'done') {
        this.rest = this.#buf;
        this.#buf = Buffer.alloc(0);
        return;
      }
      if (s === 'closed') return;
      if (s === 'starttls') {
        if (this.#buf.length)
          this.#close('client sent plain data after NBD_OPT_STARTTLS instead of waiting for the reply');
        return;
      }
      if (!this.#step()) return;
    }
  }

  /** Runs one state; returns false when more bytes are needed. */
  #step(): boolean {
    const b = this.#buf;
    switch (this.state) {
      case 'client-flags': {
        if (b.length < 4) return false;
        const flags = b.readUInt32BE(0);
        this.#consume(4);
        // proto.md: the server MUST drop the connection on unknown client flags.
        if ((flags & ~(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)) !== 0)
          return this.#close(`client flags 0x${flags.toString(16)} include bits the server did not offer`);
        this.#noZeroes = (flags & FLAG_C_NO_ZEROES) !== 0;
        this.state = 'option-header';
        return true;
      }
      case 'option-header': {
        if (b.length < 16) return false;
        if (b.readBigUInt64BE(0) !== IHAVEOPT)
          return this.#close(`bad option magic 0x${b.readBigUInt64BE(0).toString(16)} (expected IHAVEOPT)`);
        this.#opt = b.readUInt32BE(8);
        this.#optLen = b.readUInt32BE(12);
        this.#consume(16);
        if (++this.#options > MAX_OPTIONS) return this.#close(`more than ${MAX_OPTIONS} options in one handshake`);
        if (this.#optLen > MAX_OPTION_LEN) {
          if (this.#opt === OPT.EXPORT_NAME) return this.#close(`export name of ${this.#optLen} bytes is too long`);
          this.state = 'option-skip';
          return true;
        }
        this.state = 'option-data';
        return true;
      }
      case 'option-skip': {
        const n = Math.min(b.length, this.#optLen);
        this.#consume(n);
        this.#optLen -= n;
        if (this.#optLen > 0) return false;
        this.#reply(this.#opt, REP.ERR_TOO_BIG, `option data longer than ${MAX_OPTION_LEN} bytes`);
        this.state = 'option-header';
        return true;
      }
      case 'option-data': {
        if (b.length < this.#optLen) return false;
        const data = b.subarray(0, this.#optLen);
        this.#consume(this.#optLen);
        this.state = 'option-header';
        this.#option(this.#opt, data);
        return true;
      }
      default:
        return false;
    }
  }

  #option(opt: number, data: Buffer): void {
    // FORCEDTLS: nothing but STARTTLS and ABORT before TLS is up (proto.md "FORCEDTLS mode").
    if (this.#tlsMode === 'required' && !this.#tls && opt !== OPT.STARTTLS && opt !== OPT.ABORT) {
      if (opt === OPT.EXPORT_NAME) this.#close('client asked for an export with NBD_OPT_EXPORT_NAME before TLS');
      else this.#reply(opt, REP.ERR_TLS_REQD, 'this server requires TLS: send NBD_OPT_STARTTLS first');
      return;
    }
    switch (opt) {
      case OPT.EXPORT_NAME:
        this.#exportName(data);
        return;
      case OPT.ABORT:
        this.#reply(opt, REP.ACK);
        this.clean = true;
        this.#close('client aborted the handshake');
        return;
      case OPT.LIST:
        this.#list(data);
        return;
      case OPT.STARTTLS:
        this.#startTls(data);
        return;
      case OPT.INFO:
      case OPT.GO:
        this.#infoGo(opt, data);
        return;
      case OPT.STRUCTURED_REPLY:
        if (data.length !== 0) {
          this.#reply(opt, REP.ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
          return;
        }
        this.#structured = true;
        this.#reply(opt, REP.ACK);
        return;
      case OPT.LIST_META_CONTEXT:
      case OPT.SET_META_CONTEXT:
        this.#metaContext(opt, data);
        return;
      default:
        // Unknown options (EXTENDED_HEADERS included) are refused, never a hang-up.
        this.#reply(opt, REP.ERR_UNSUP, `option ${opt} is not supported`);
        return;
    }
  }

  #startTls(data: Buffer): void {
    if (!this.#tlsMode) {
      this.#reply(OPT.STARTTLS, REP.ERR_POLICY, 'TLS is not configured on this server (storage.tls)');
      return;
    }
    if (this.#tls) {
      this.#reply(OPT.STARTTLS, REP.ERR_INVALID, 'TLS is already running on this session');
      return;
    }
    if (data.length !== 0) {
      this.#reply(OPT.STARTTLS, REP.ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
      return;
    }
    this.#reply(OPT.STARTTLS, REP.ACK);
    this.state = 'starttls';
  }

  /** Why a TLS-only export cannot be used on this session yet, or undefined when it can. */
  #tlsRefusal(exp: NbdExport): { rep: number; why: string } | undefined {
    if (!exp.tlsOnly || this.#tls) return undefined;
    // NOTLS mode must never answer NBD_REP_ERR_TLS_REQD (proto.md "NOTLS mode").
    if (!this.#tlsMode)
      return { rep: REP.ERR_POLICY, why: `export "${exp.name}" needs TLS, which this server does not offer` };
    return { rep: REP.ERR_TLS_REQD, why: `export "${exp.name}" is TLS-only: send NBD_OPT_STARTTLS first` };
  }

  #exportName(data: Buffer): void {
    const name = data.toString('utf8');
    const exp = this.#exports.resolve(name);
    // proto.md: an unknown export after EXPORT_NAME MUST terminate the session.
    if (!exp) {
      this.#close(`client asked for unknown export "${name}" with NBD_OPT_EXPORT_NAME`);
      return;
    }
    // EXPORT_NAME has no error reply: a refused client can only be disconnected.
    if (!this.#allowed(exp)) {
      this.#close(`client ${this.#peer} is not in the allowed clients of export "${exp.name}"`);
      return;
    }
    const tls = this.#tlsRefusal(exp);
    if (tls) {
      this.#close(`${tls.why} (asked with NBD_OPT_EXPORT_NAME, which cannot be refused)`);
      return;
    }
    const flags = transmissionFlags(exp, this.#structured);
    this.out.push(exportNameReply(exp.backend.size, flags, this.#noZeroes));
    this.#finish(exp, flags);
  }

  #list(data: Buffer): void {
    if (data.length !== 0) {
      this.#reply(OPT.LIST, REP.ERR_INVALID, 'NBD_OPT_LIST takes no data');
      return;
    }
    // Only what this client could open: allowed_clients, and TLS-only exports once TLS is up
    // (proto.md SELECTIVETLS: MAY omit them).
    for (const exp of this.#exports.list()) {
      if (!this.#allowed(exp) || this.#tlsRefusal(exp)) continue;
      this.#reply(OPT.LIST, REP.SERVER, listEntry(exp.name, exp.description));
    }
    this.#reply(OPT.LIST, REP.ACK);
  }

  #infoGo(opt: number, data: Buffer): void {
    const parsed = parseInfoRequest(data);
    if (typeof parsed === 'string') {
      this.#reply(opt, REP.ERR_INVALID, parsed);
      return;
    }
    const { name, reqs } = parsed;
    const exp = this.#exports.resolve(name);
    if (!exp) {
      this.#reply(opt, REP.ERR_UNKNOWN, `export "${name}" does not exist`);
      return;
    }
    if (!this.#allowed(exp)) {
      this.#reply(opt, REP.ERR_POLICY, `client ${this.#peer} is not allowed to use export "${exp.name}"`);
      return;
    }
    const tls = this.#tlsRefusal(exp);
    if (tls) {
      this.#reply(opt, tls.rep, tls.why);
      return;
    }
    const flags = transmissionFlags(exp, this.#structured);
    this.#reply(opt, REP.INFO, infoExport(exp.backend.size, flags));
    if (reqs.has(INFO.NAME)) this.#reply(opt, REP.INFO, infoString(INFO.NAME, exp.name));
    if (reqs.has(INFO.DESCRIPTION) && exp.description)
      this.#reply(opt, REP.INFO, infoString(INFO.DESCRIPTION, exp.description));
    // Our constraints are the defaults (min 1, preferred 4096) plus a 32 MiB payload cap; always send them.
    this.#reply(opt, REP.INFO, infoBlockSize());
    this.#reply(opt, REP.ACK);
    if (opt === OPT.GO) this.#finish(exp, flags);
  }

  #metaContext(opt: number, data: Buffer): void {
    const set = opt === OPT.SET_META_CONTEXT;
    // SET replaces the previous selection even when it fails (proto.md).
    if (set) this.#metaExport = undefined;
    if (!this.#structured) {
      this.#reply(opt, REP.ERR_INVALID, 'negotiate NBD_OPT_STRUCTURED_REPLY before metadata contexts');
      return;
    }
    const parsed = parseMetaRequest(data);
    if (typeof parsed === 'string') {
      this.#reply(opt, REP.ERR_INVALID, parsed);
      return;
    }
    const exp = this.#exports.resolve(parsed.name);
    if (!exp) {
      this.#reply(opt, REP.ERR_UNKNOWN, `export "${parsed.name}" does not exist`);
      return;
    }
    let match: boolean;
    if (set) match = parsed.queries.includes(BASE_ALLOCATION);
    else match = parsed.queries.length === 0 || parsed.queries.some((q) => q === 'base:' || q === BASE_ALLOCATION);
    if (match) {
      this.#reply(opt, REP.META_CONTEXT, metaContextEntry(set ? BASE_ALLOCATION_ID : 0, BASE_ALLOCATION));
      if (set) this.#metaExport = exp.name;
    }
    this.#reply(opt, REP.ACK);
  }

  /** The export's access policy for this client (unix clients: always allowed). */
  #allowed(exp: NbdExport): boolean {
    return this.#peer === undefined || exp.allowClient === undefined || exp.allowClient(this.#peer);
  }

  #finish(exp: NbdExport, flags: number): void {
    this.result = {
      export: exp,
      structuredReplies: this.#structured,
      baseAllocation: this.#structured && this.#metaExport === exp.name,
      flags,
    };
    this.state = 'done';
  }

  #reply(opt: number, type: number, data?: Buffer | string): void {
    const payload = typeof data === 'string' ? Buffer.from(data) : (data ?? Buffer.alloc(0));
    this.out.push(optionReplyHeader(opt, type, payload.length));
    if (payload.length) this.out.push(payload);
  }

  #consume(n: number): void {
    this.#buf = this.#buf.subarray(n);
  }

  #close(reason: string): false {
    this.state = 'closed';
    this.closeReason = reason;
    return false;
  }
}

/**
 * Every error class declares its own HTTP status (src/errors.ts
 * VmlinkError.status): the control API answers with it, no central table.
 * This test constructs every exported VmlinkError subclass and checks its
 * code and status, so a new error class without a thought-out status fails.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as apiClient from '../../src/api/client.js';
import * as apiErrors from '../../src/api/errors.js';
import * as cliArgs from '../../src/cli/args.js';
import * as cliCaptureFile from '../../src/cli/capture-file.js';
import * as cliPcap from '../../src/cli/pcap.js';
import * as clusterErrors from '../../src/cluster/errors.js';
import * as clusterJoinErrors from '../../src/cluster/join-errors.js';
import * as configErrors from '../../src/config/errors.js';
import * as controlErrors from '../../src/control/errors.js';
import * as daemonErrors from '../../src/daemon/errors.js';
import * as libvirtXml from '../../src/daemon/libvirt-xml.js';
import * as daemonOverlay from '../../src/daemon/overlay.js';
import * as qemuArgs from '../../src/daemon/qemu-args.js';
import * as rootErrors from '../../src/errors.js';
import { VmlinkError } from '../../src/errors.js';
import * as guestErrors from '../../src/guest/errors.js';
import * as nativeIndex from '../../src/native/index.js';
import * as netErrors from '../../src/net/errors.js';
import * as overlayErrors from '../../src/net/overlay/errors.js';
import * as hostPort from '../../src/net/ports/host.js';
import * as tapPort from '../../src/net/ports/tap.js';
import * as vhostErrors from '../../src/net/vhost/errors.js';
import * as pkiErrors from '../../src/pki/errors.js';
import * as qosErrors from '../../src/qos/errors.js';
import * as reconcileErrors from '../../src/reconcile/errors.js';
import * as storageErrors from '../../src/storage/errors.js';
import * as nbdServer from '../../src/storage/nbd/server.js';
import * as nbdTls from '../../src/storage/nbd/tls.js';

/** Every module that exports an error class: each area's errors.ts, and the few modules that keep their own. */
const MODULES: Record<string, unknown>[] = [
  rootErrors,
  apiErrors,
  apiClient,
  cliArgs,
  cliCaptureFile,
  cliPcap,
  clusterErrors,
  clusterJoinErrors,
  configErrors,
  controlErrors,
  daemonErrors,
  daemonOverlay,
  guestErrors,
  nativeIndex,
  netErrors,
  overlayErrors,
  pkiErrors,
  hostPort,
  libvirtXml,
  qemuArgs,
  tapPort,
  qosErrors,
  reconcileErrors,
  vhostErrors,
  storageErrors,
  nbdServer,
  nbdTls,
];

// 405: the read-only HTTP endpoint refuses a change (docs/api.md, docs/daemon.md `http`).
const ALLOWED = new Set([400, 403, 404, 405, 409, 413, 422, 500, 503]);

/**
 * The only classes that may answer 500, each a failure of the daemon or of
 * the host rather than of the request, or an error that never reaches the API.
 */
const INTERNAL = new Set([
  // Area bases: never thrown as they are; a subclass says what went wrong.
  'VmlinkError',
  'ApiServerError',
  'ControlError',
  'NetError',
  'VhostError',
  'OverlayError',
  'QosError',
  'ClusterError',
  // Start-up failures of the control socket (mode, owner, path): the daemon does not start.
  'ControlSocketError',
  'ControlPathError',
  // The state store is damaged: the daemon refuses to start rather than lose it.
  'StateCorruptError',
  'StateJournalCorruptError',
  // The host's disk failed a state read or write (docs/api.md names ERR_STATE_IO as 500).
  'StateIoError',
  // A backend failed under an I/O operation (disk error, remote lost): the server failed, not the request.
  'BackendError',
  'IoError',
  // Command-line work on local files and tools, never an API answer.
  'CaError',
  'GuestImageError',
  'CaptureWriteError',
  'PcapStreamError',
  // The native addon was not built.
  'NativeMissingError',
  // Start-up failure of the join endpoint (its certificate files, its listen address): the daemon reports it.
  'JoinServerError',
]);

type Ctor = new (...args: never[]) => VmlinkError;

/** Plausible constructor arguments for each class (the status must not depend on them, except where the thrower gives it). */
const ARGS: Record<string, unknown[]> = {
  VmlinkError: ['ERR_SOMETHING', 'something failed'],
  ApiServerError: ['ERR_SOMETHING', 'something failed'],
  BadRequestError: ['query parameter "count" must be given once'],
  RouteNotFoundError: ['GET', '/v1/nothing'],
  HttpReadOnlyError: ['POST', '/v1/reload'],
  ControlInUseError: ['/run/vmlink/control.sock'],
  ControlSocketError: ['/run/vmlink/control.sock', 'unknown group "kvm"'],
  ControlPathError: ['/run/vmlink/control.sock', 'not a socket'],
  ApiError: [404, 'ERR_PORT_NOT_FOUND', 'port "vm1" does not exist'],
  DaemonUnreachableError: ['/run/vmlink/control.sock', 'ENOENT'],
  DaemonTimeoutError: ['/run/vmlink/control.sock', 'GET /v1/status', 5000],
  UsageError: ['unknown flag --frob'],
  CaptureWriteError: ['cannot write /tmp/x.pcap: ENOSPC'],
  PcapStreamError: ['bad magic 0x00000000'],
  ClusterError: ['ERR_SOMETHING', 'something failed'],
  ClusterUnavailableError: ['create network "lan"', 'connect ECONNREFUSED 10.0.0.1:2379'],
  ClusterConflictError: ['network "lan" has VNI 10 on this host but VNI 20 in the fabric'],
  ClusterTlsConfigError: ['the client key', '/etc/vmlink/etcd-key.pem', 'ENOENT'],
  ClusterRecordCorruptError: ['admission/a~b', 'not JSON', 'link "a~b" admits no reservation'],
  ConfigError: ['vmlink.yaml', [{ path: 'ports[0].listen', message: 'required field is missing' }]],
  ControlError: ['ERR_SOMETHING', 'something failed'],
  StateCorruptError: ['/var/lib/vmlink/state.json', 'not JSON'],
  StateIoError: ['write', '/var/lib/vmlink/state.json', 'ENOSPC'],
  StateJournalCorruptError: ['/var/lib/vmlink/journal', 'bad record at 12'],
  DeclaredInConfigError: ['port', 'vm1', '/etc/vmlink.yaml'],
  ReloadRefusedError: ['/etc/vmlink.yaml', 'host.id changed'],
  ReloadUnavailableError: [],
  ClusterMemberError: ['h1', { etcd: ['http://192.0.2.10:2379'], prefix: '/vmlink/' }],
  ClusterNotMemberError: ['h1'],
  ClusterExistsError: [['http://192.0.2.10:2379'], '/vmlink/'],
  ExportNotFoundError: ['disk1', ['disk0']],
  ExportExistsError: ['disk1'],
  ExportInUseError: ['disk1', 2],
  ExportBackendError: ['disk1', 'image missing'],
  StorageUnavailableError: ['cannot listen on tcp:0.0.0.0:10809'],
  ExportPathError: ['disk1', 'backend.path', '/etc/passwd', '/etc/passwd', ['/var/lib/vmlink/images']],
  ExportMemoryLimitError: ['disk1', 1 << 30, 1 << 30, 1 << 30, false],
  ExportCowLoopError: ['disk1', 'its base is itself'],
  ExportFileInUseError: ['disk1', 'backend.path', '/img/a.raw', 'disk0', 'backend.path'],
  OverlayOffError: ['overlay'],
  GuestImageError: ['mkfs.ext4 is not installed'],
  NativeMissingError: [['build/Release/vmlink.node']],
  NetError: ['ERR_SOMETHING', 'something failed'],
  NetworkExistsError: ['lan'],
  NetworkNotFoundError: ['lan', ['dmz']],
  NetworkInUseError: ['lan', ['vm1']],
  NetworkLimitError: [4096, 4096],
  VniInUseError: [10, 'lan'],
  PortExistsError: ['vm1'],
  PortNotFoundError: ['vm1'],
  PortKindError: ['frob', ['tap', 'stream']],
  PortAddressError: ['vm1', 'tcp:127.0.0.1:1', 'EADDRINUSE'],
  PortOpenError: ['ERR_PORT_OPEN', 'port "vm1": cannot open its transport'],
  MacAddressError: ['52:54:zz:00:00:01'],
  IpAddressError: ['10.0.0.300'],
  PortNotInNetworkError: ['link/to-b/lan', 'dmz', ['lan']],
  HostPortError: ['ERR_HOST_PERMISSION', 'port "h1": needs CAP_NET_RAW'],
  TapError: ['ERR_TAP_NOT_FOUND', 'port "t1": no tap device tap9'],
  QemuArgsError: ['vm1', 'kind "host" has no QEMU netdev'],
  LibvirtXmlError: ['port "vm1"', 'libvirt has no VDE interface'],
  OverlayError: ['ERR_SOMETHING', 'something failed'],
  LinkProtocolError: ['10.0.0.2:7000', 'bad hello'],
  LinkDialError: ['tcp:10.0.0.2:7000', 'ECONNREFUSED'],
  LinkTlsConfigError: ['overlay.tls.cert: cannot read /x.pem'],
  VxlanConfigError: ['overlay.vxlan.listen: cannot bind'],
  LinkExistsError: ['to-b'],
  LinkNotFoundError: ['to-b'],
  LinkNotDeletableError: ['to-b', 'it was accepted from a peer'],
  CaError: ['the openssl command is not installed'],
  QosError: ['ERR_SOMETHING', 'something failed'],
  QosAdmissionError: ['vm1', 'reservations exceed capacity'],
  QosRequestError: ['min above max'],
  VhostError: ['ERR_SOMETHING', 'something failed'],
  VhostProtocolError: ['bad header'],
  VhostFdError: ['expected 1 fd, got 0'],
  VhostMemoryError: ['regions overlap'],
  VhostMemoryFaultError: ['region 0 faulted'],
  VhostRingError: ['ring 3 does not exist'],
  VirtqueueError: ['descriptor loop'],
  StorageError: ['ERR_COW_INVALID', 'the copy-on-write overlay must be writable'],
  BackendError: ['ERR_NBD_REMOTE_LOST', 5, 'the connection was lost with unflushed writes'],
  OutOfRangeError: ['read', 4096, 512, 4096],
  ReadOnlyError: ['write'],
  NotFastError: [],
  IoError: ['read', Object.assign(new Error('EIO'), { code: 'EIO' })],
  ExportError: ['ERR_EXPORT_INVALID', 'export name "-x" is invalid', 400],
  NbdClientError: ['ERR_NBD_REMOTE', 5, 'NBD server answered error 5'],
  NbdListenError: ['tcp:0.0.0.0:10809', 'EADDRINUSE'],
  NbdTlsConfigError: ['cert.pem is not PEM'],
  JoinTokenInvalidError: ['the secret of token abcd2345 does not match'],
  JoinTokenExpiredError: ['abcd2345', '2026-01-01T00:00:00.000Z'],
  JoinTokenUsedError: ['abcd2345', 'b', '2026-01-01T00:00:00.000Z'],
  JoinHostExistsError: ['b'],
  JoinBadRequestError: ['"csr" is not a PEM certificate request'],
  JoinBodyTooLargeError: [16384],
  JoinBusyError: ['4 joins are in progress'],
  JoinUnavailableError: ['no issuer could be reached: 10.0.0.1:7443: ECONNREFUSED'],
  JoinCaMismatchError: [['10.0.0.1:7443'], 'ab'.repeat(32), ["its CA's public key has sha256 cd"]],
  JoinServerError: ['join endpoint: cannot listen on 10.0.0.1:7443: EADDRINUSE'],
  JoinRefusedError: ['ERR_JOIN_TOKEN_USED', 'issuer 10.0.0.1:7443: join token abcd2345 was already used', 409],
};

/** Every exported class of the modules above that extends VmlinkError (the base included). */
function errorClasses(): Map<string, Ctor> {
  const found = new Map<string, Ctor>();
  for (const mod of MODULES)
    for (const value of Object.values(mod))
      if (typeof value === 'function' && (value === VmlinkError || value.prototype instanceof VmlinkError))
        found.set(value.name, value as Ctor);
  return found;
}

/** Names of the classes that src/ declares as extending VmlinkError, directly or through another. */
function declaredInSource(): Set<string> {
  const src = fileURLToPath(new URL('../../../src/', import.meta.url));
  const parents = new Map<string, string>();
  for (const entry of readdirSync(src, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith('.ts')) continue;
    const text = readFileSync(join(entry.parentPath, entry.name), 'utf8');
    for (const m of text.matchAll(/class (\w+) extends (\w+)/g)) parents.set(m[1] as string, m[2] as string);
  }
  const isVmlink = (name: string, seen = 0): boolean => {
    const parent = parents.get(name);
    return parent === 'VmlinkError' || (parent !== undefined && seen < 20 && isVmlink(parent, seen + 1));
  };
  return new Set([...parents.keys()].filter((n) => isVmlink(n)));
}

describe('error status', () => {
  const classes = errorClasses();

  it('every error class declared in src/ is exported from a module this test enumerates', () => {
    const declared = declaredInSource();
    assert.ok(declared.size > 60, `found only ${declared.size} error classes in src/`);
    const missing = [...declared].filter((n) => !classes.has(n));
    assert.deepEqual(missing, [], 'add the module that declares these classes to MODULES');
  });

  it('every error class has a stable code and a status the API may answer', () => {
    assert.ok(classes.size > 60, `found only ${classes.size} error classes`);
    for (const [name, Class] of classes) {
      const args = ARGS[name];
      assert.ok(args, `${name}: give plausible constructor arguments in ARGS`);
      const err = new Class(...(args as never[]));
      assert.equal(err.name, name);
      assert.match(err.code, /^ERR_[A-Z0-9_]+$/, `${name}: code ${err.code}`);
      assert.ok(ALLOWED.has(err.status), `${name}: status ${err.status} is not one the API answers with`);
      if (err.status === 500) assert.ok(INTERNAL.has(name), `${name} answers 500: declare the status that fits it`);
      else assert.ok(!INTERNAL.has(name), `${name} is allow-listed as internal but answers ${err.status}`);
    }
  });

  it('a code means one status, whichever class raises it', () => {
    const statusOf = new Map<string, { status: number; name: string }>();
    for (const [name, Class] of classes) {
      const err = new Class(...((ARGS[name] ?? []) as never[]));
      const seen = statusOf.get(err.code);
      if (seen)
        assert.equal(
          err.status,
          seen.status,
          `${err.code}: ${name} answers ${err.status}, ${seen.name} ${seen.status}`,
        );
      else statusOf.set(err.code, { status: err.status, name });
    }
  });

  it('an error whose thrower gives the code gives its status too (storage ExportError, JoinRefusedError)', () => {
    const { ExportError } = storageErrors;
    assert.equal(new ExportError('ERR_EXPORT_NOT_FOUND', 'export "x" does not exist', 404).status, 404);
    assert.equal(new ExportError('ERR_EXPORT_EXISTS', 'export "x" already exists', 409).status, 409);
    const { JoinRefusedError } = clusterJoinErrors;
    assert.equal(new JoinRefusedError('ERR_JOIN_HOST_EXISTS', 'host "b" is a member', 409).status, 409);
  });
});

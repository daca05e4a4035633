/**
 * Layer rules of docs DESIGN "Layout": dependencies point downward.
 * Run by `npm run depcheck` (part of `npm test`); a wrong-way import fails the build.
 * Paths are relative to the repository root; only src/ is checked.
 */
/**
 * The one exception, excluded by exact path in the rule it would break, so
 * any new wrong-way import still fails:
 * - src/cli/daemon.ts -> src/daemon/run.ts: `vmlink daemon` is the entry
 *   point that starts the daemon (bin/vmlink.js -> cli); it is the one place
 *   allowed to import the daemon.
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      severity: 'error',
      comment: 'Modules form no import cycles.',
      from: { path: '^src/' },
      to: { circular: true, dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'cli-talks-to-the-api',
      severity: 'error',
      comment:
        'The CLI talks to the daemon through the control API client; besides that it may use pki, config ' +
        '(parsing), util, guest (image building is a CLI tool) and the shared errors and logger.',
      from: { path: '^src/cli/', pathNot: '^src/cli/daemon\\.ts$' },
      to: {
        path: '^src/',
        pathNot: '^src/(cli/|api/client\\.ts|pki/|config/|util/|guest/|qos/names\\.ts|errors\\.ts|log\\.ts)',
      },
    },
    {
      name: 'cli-daemon-entry',
      severity: 'error',
      comment: '`vmlink daemon` (src/cli/daemon.ts) may import what the CLI may, and src/daemon/run.ts to start it.',
      from: { path: '^src/cli/daemon\\.ts$' },
      to: {
        path: '^src/',
        pathNot:
          '^src/(cli/|api/client\\.ts|pki/|config/|util/|guest/|qos/names\\.ts|errors\\.ts|log\\.ts|daemon/run\\.ts$)',
      },
    },
    {
      name: 'config-imports-no-runtime-module',
      severity: 'error',
      comment:
        'config (schema, loading, defaults) imports only config, util, the class names of qos (a leaf) and ' +
        'the shared errors.',
      from: { path: '^src/config/' },
      to: { path: '^src/', pathNot: '^src/(config/|util/|qos/names\\.ts|errors\\.ts)' },
    },
    {
      name: 'qos-and-storage-never-import-net',
      severity: 'error',
      comment: 'qos is used by net and storage; neither qos nor storage depends on net.',
      from: { path: '^src/(qos|storage)/' },
      to: { path: '^src/net/' },
    },
    {
      name: 'frame-accessors-are-a-leaf',
      severity: 'error',
      comment:
        'src/net/frame/ (in-place header accessors, used by the switch stages, offload and vhost) imports nothing ' +
        'outside itself.',
      from: { path: '^src/net/frame/' },
      to: { path: '^src/', pathNot: '^src/net/frame/' },
    },
    {
      name: 'storage-knows-nothing-of-networking',
      severity: 'error',
      comment: 'storage uses only qos, util, config (addresses), native, control and the shared errors and logger.',
      from: { path: '^src/storage/' },
      to: { path: '^src/', pathNot: '^src/(storage/|qos/|util/|config/|native/|errors\\.ts|log\\.ts)' },
    },
    {
      name: 'switch-knows-no-port',
      severity: 'error',
      comment: 'The switch sees ports only through the Port contract (src/net/port.ts).',
      from: { path: '^src/net/switch/' },
      to: { path: '^src/net/(ports|overlay|vhost)/' },
    },
    {
      name: 'ports-overlay-vhost-meet-only-at-the-port-contract',
      severity: 'error',
      comment:
        'net/ports, net/overlay and net/vhost do not import each other; what they share is src/net/port.ts ' +
        '(or a module below net).',
      from: { path: '^src/net/(ports|overlay|vhost)/' },
      to: { path: '^src/net/(ports|overlay|vhost)/', pathNot: '^src/net/$1/' },
    },
    {
      name: 'a-port-knows-no-switch',
      severity: 'error',
      comment: 'Port kinds and the vhost-user back-end see the switch only through the Port contract.',
      from: { path: '^src/net/(ports|vhost)/' },
      to: { path: '^src/net/switch/' },
    },
    {
      name: 'net-knows-no-upper-layer',
      severity: 'error',
      comment: 'net imports no daemon, api, cli, config, control, storage or services module.',
      from: { path: '^src/net/' },
      to: { path: '^src/(daemon|api|cli|config|control|storage|services|reconcile|cluster|migrate)/' },
    },
    {
      name: 'pki-and-util-are-leaves',
      severity: 'error',
      comment: 'pki and util import only themselves, native and the shared errors and logger.',
      from: { path: '^src/(pki|util)/' },
      to: {
        path: '^src/',
        pathNot: '^src/(pki/|util/|native/|errors\\.ts|log\\.ts)',
      },
    },
    {
      name: 'nothing-imports-the-daemon',
      severity: 'error',
      comment: 'The daemon wires everything; only its own modules (and bin/entry) import it.',
      // bin/vmlink.js -> src/cli/daemon.ts (`vmlink daemon`) is the entry that starts it.
      from: { path: '^src/', pathNot: '^src/(daemon/|cli/daemon\\.ts$)' },
      to: { path: '^src/daemon/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    includeOnly: '^src/',
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};

/**
 * Layer rules of docs DESIGN "Layout": dependencies point downward.
 * Run by `npm run depcheck` (part of `npm test`); a wrong-way import fails the build.
 * Paths are relative to the repository root; only src/ is checked.
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
      from: { path: '^src/cli/' },
      to: {
        path: '^src/',
        pathNot: '^src/(cli/|api/client\\.ts|pki/|config/|util/|guest/|errors\\.ts|log\\.ts)',
      },
    },
    {
      name: 'config-imports-no-runtime-module',
      severity: 'error',
      comment: 'config (schema, loading, defaults) imports only config, util and the shared errors.',
      from: { path: '^src/config/' },
      to: { path: '^src/', pathNot: '^src/(config/|util/|errors\\.ts)' },
    },
    {
      name: 'qos-and-storage-never-import-net',
      severity: 'error',
      comment: 'qos is used by net and storage; neither qos nor storage depends on net.',
      from: { path: '^src/(qos|storage)/' },
      to: { path: '^src/net/' },
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
      name: 'net-knows-no-upper-layer',
      severity: 'error',
      comment: 'net imports no daemon, api, cli, config, control, storage or services module.',
      from: { path: '^src/net/' },
      to: { path: '^src/(daemon|api|cli|config|control|storage|services|reconcile|cluster|migrate)/' },
    },
    {
      name: 'pki-and-util-are-leaves',
      severity: 'error',
      comment: 'pki and util import only themselves, native and the shared errors.',
      from: { path: '^src/(pki|util)/' },
      to: { path: '^src/', pathNot: '^src/(pki/|util/|native/|errors\\.ts)' },
    },
    {
      name: 'nothing-imports-the-daemon',
      severity: 'error',
      comment: 'The daemon wires everything; only its own modules (and bin/entry) import it.',
      from: { path: '^src/', pathNot: '^src/daemon/' },
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

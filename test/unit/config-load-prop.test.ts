/**
 * Property tests of the configuration loader (fast-check): whatever a YAML
 * file holds, loading it returns a config or throws ConfigError with the
 * path of each bad field, never anything else. A failure prints the seed and
 * the shrunk input; rerun it with FC_SEED=<seed>.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { stringify } from 'yaml';
import { ConfigError } from '../../src/config/errors.js';
import { parseConfig, validateConfig } from '../../src/config/load.js';

const seed = process.env['FC_SEED'] === undefined ? {} : { seed: Number(process.env['FC_SEED']) };
const params = (numRuns: number) => ({ numRuns, ...seed });

/** A valid configuration touching most sections. */
const BASE = {
  host: { id: 'h1', control: '/run/vmlink/x.sock', state_dir: '/var/lib/vmlink', aging_sec: 300 },
  networks: [
    { name: 'lan', vni: 10, mtu: 1500 },
    { name: 'dmz', vni: 20 },
  ],
  ports: [
    {
      name: 'vm1',
      kind: 'stream',
      network: 'lan',
      listen: 'unix:/run/vmlink/vm1.sock',
      allowed_macs: ['52:54:00:00:00:01'],
      max_macs: 16,
      queue_len: 256,
      storm: { pps: 1000, burst: 100 },
      qos: { max: '100mbit' },
    },
    { name: 'up', kind: 'stream', trunk: { vlans: { '10': 'lan', '20': 'dmz' } }, connect: 'tcp:127.0.0.1:5555' },
  ],
  storage: { listen: ['unix:/run/vmlink/nbd.sock'], max_in_flight_per_client: 64 },
  exports: [{ name: 'd', backend: { type: 'memory', size: '64M' }, weight: 2 }],
  log: { level: 'info' },
};

/** Fields whose value is checked on its own (no other field refers to them). */
const FIELDS: (string | number)[][] = [
  ['host', 'id'],
  ['host', 'aging_sec'],
  ['host', 'control'],
  ['networks', 0, 'mtu'],
  ['networks', 1, 'vni'],
  ['ports', 0, 'allowed_macs'],
  ['ports', 0, 'max_macs'],
  ['ports', 0, 'queue_len'],
  ['ports', 0, 'storm'],
  ['ports', 0, 'qos'],
  ['ports', 0, 'listen'],
  ['ports', 1, 'trunk', 'vlans'],
  ['storage', 'listen'],
  ['storage', 'max_in_flight_per_client'],
  ['exports', 0, 'backend'],
  ['exports', 0, 'weight'],
  ['log', 'level'],
];

/** `ports[0].qos`, as ConfigProblem paths are written. */
const pathText = (p: (string | number)[]): string =>
  p.reduce<string>((s, k) => (typeof k === 'number' ? `${s}[${k}]` : s ? `${s}.${k}` : k), '');

/** Calls `f`; it must return or throw a ConfigError whose problems each have a path and a message. */
function configOrError(f: () => unknown): ConfigError | undefined {
  try {
    f();
    return undefined;
  } catch (err) {
    assert.ok(err instanceof ConfigError, `not a ConfigError: ${String(err)}`);
    assert.equal(err.code, 'ERR_CONFIG_INVALID');
    assert.ok(err.problems.length > 0);
    for (const p of err.problems) {
      assert.equal(typeof p.path, 'string');
      assert.ok(p.message.length > 0);
      assert.ok(err.message.includes(p.message));
    }
    return err;
  }
}

// Values a YAML document can hold (what yaml's toJS can give back), plus the odd keys people type.
const yamlValue = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.double(),
    fc.string({ maxLength: 20 }),
    fc.constantFrom(
      '10',
      '1e3',
      '52:54:00:00:00:01',
      'unix:/x',
      'tcp:1.2.3.4:5',
      '100mbit',
      '__proto__',
      'constructor',
    ),
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('name', 'kind', '__proto__')), tie('value'), {
      maxKeys: 4,
    }),
  ),
})).value;

describe('configuration loader (property tests)', () => {
  it('returns a config or a ConfigError for any document, never another exception', () => {
    fc.assert(
      fc.property(yamlValue, (doc) => {
        configOrError(() => validateConfig(doc));
      }),
      params(500),
    );
  });

  it('returns a config or a ConfigError for any YAML text, syntax errors included', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 200 }),
          yamlValue.map((v) => stringify(v)),
          yamlValue.map((v) => `host: { id: h }\nports: ${JSON.stringify(v)}\n`),
        ),
        (text) => {
          configOrError(() => parseConfig(text, 'test.yaml'));
        },
      ),
      params(500),
    );
  });

  it('refuses an alias to no anchor and an alias bomb with ERR_CONFIG_INVALID, naming YAML', () => {
    // Eight levels of ten aliases each ("billion laughs"): yaml refuses to expand it.
    const letters = 'abcdefgh';
    const bomb = [...letters].map((l, i) =>
      i === 0
        ? 'a: &a [x, x, x, x, x, x, x, x, x, x]'
        : `${l}: &${l} [${Array(10)
            .fill(`*${letters[i - 1]}`)
            .join(', ')}]`,
    );
    for (const text of ['host: *nope\n', bomb.join('\n')]) {
      const err = configOrError(() => parseConfig(text, 'test.yaml'));
      assert.match(err?.message ?? '', /\(document\): YAML: /, text);
    }
  });

  it('names the replaced field in the error when one field of a valid config gets an arbitrary value', () => {
    assert.equal(
      configOrError(() => validateConfig(BASE)),
      undefined,
    );
    fc.assert(
      fc.property(fc.constantFrom(...FIELDS), yamlValue, (path, value) => {
        const doc = structuredClone(BASE) as Record<string | number, unknown>;
        let parent = doc;
        for (const k of path.slice(0, -1)) parent = parent[k] as Record<string | number, unknown>;
        parent[path.at(-1) as string | number] = value;
        const err = configOrError(() => validateConfig(doc));
        if (!err) return;
        const field = pathText(path);
        assert.ok(
          err.problems.some(
            (p) => p.path === field || p.path.startsWith(`${field}.`) || p.path.startsWith(`${field}[`),
          ),
          `${field} = ${JSON.stringify(value)}: problems at ${err.problems.map((p) => p.path).join(', ')}`,
        );
      }),
      params(500),
    );
  });
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError } from '../../src/config/errors.js';
import { parseConfig } from '../../src/config/load.js';

const HOST = 'host: { id: h1, control: /tmp/x.sock }\n';

/** The problems of a config text that must not validate. */
function problems(text: string): { path: string; message: string }[] {
  try {
    parseConfig(text);
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.code, 'ERR_CONFIG_INVALID');
    return err.problems;
  }
  assert.fail('the config validated');
}

test('admission limits have their documented defaults', () => {
  const c = parseConfig(`${HOST}storage: {}\noverlay: { plain: true }\n`);
  assert.equal(c.host.control_max_connections, 64);
  assert.equal(c.host.control_headers_timeout_ms, 10_000);
  assert.equal(c.storage?.max_connections, 1024);
  assert.equal(c.storage?.max_connections_per_source, 64);
  assert.equal(c.storage?.max_unix_connections, 1024);
  assert.equal(c.storage?.handshake_timeout_ms, 10_000);
  assert.equal(c.storage?.allowed_clients, undefined);
  assert.equal(c.overlay?.max_connections, 256);
  assert.equal(c.overlay?.max_connections_per_source, 8);
  assert.equal(c.overlay?.hello_timeout_ms, 5000);
});

test('a bad admission value is refused with the field, the range and the value', () => {
  assert.deepEqual(problems(`${HOST}storage: { max_connections_per_source: 0 }\n`), [
    {
      path: 'storage.max_connections_per_source',
      message: 'storage.max_connections_per_source must be a whole number of connections from 1 to 65536, not 0',
    },
  ]);
  assert.deepEqual(problems(`${HOST}storage: { handshake_timeout_ms: "10s" }\n`), [
    {
      path: 'storage.handshake_timeout_ms',
      message: 'storage.handshake_timeout_ms must be a whole number of ms from 100 to 600000, not "10s"',
    },
  ]);
  assert.deepEqual(problems(`${HOST}overlay: { plain: true, hello_timeout_ms: 20000 }\n`), [
    {
      path: 'overlay.hello_timeout_ms',
      message: 'overlay.hello_timeout_ms must be a whole number of ms from 100 to 9000, not 20000',
    },
  ]);
  assert.deepEqual(problems('host: { id: h1, control_max_connections: 1.5 }\n'), [
    {
      path: 'host.control_max_connections',
      message: 'host.control_max_connections must be a whole number of connections from 1 to 65536, not 1.5',
    },
  ]);
});

test('a listener allowed_clients entry that is not an address or network is named', () => {
  assert.deepEqual(problems(`${HOST}storage: { allowed_clients: [10.0.0.0/8, 10.0.0.300] }\n`), [
    {
      path: 'storage.allowed_clients[1]',
      message:
        'storage.allowed_clients: "10.0.0.300" is not an IP address or a CIDR network like 10.0.0.0/8 or fd00::/64',
    },
  ]);
  const c = parseConfig(`${HOST}overlay: { plain: true, allowed_clients: [fd00::/64, 192.0.2.7] }\n`);
  assert.deepEqual(c.overlay?.allowed_clients, ['fd00::/64', '192.0.2.7']);
});

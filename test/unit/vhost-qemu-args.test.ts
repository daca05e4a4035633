import assert from 'node:assert/strict';
import { test } from 'node:test';
import { portSchema } from '../../src/config/schema.js';
import { qemuArgs } from '../../src/daemon/qemu-args.js';

const MAC = '52:54:00:12:34:56';

test('a listening vhost-user port gives shared memfd RAM, a reconnecting chardev and vectors=0', () => {
  const spec = portSchema.parse({
    name: 'vm1',
    network: 'lab',
    kind: 'vhost-user',
    listen: 'unix:/run/vmlink/vm1,a.sock',
    memory_mb: 512,
  });
  assert.deepEqual(qemuArgs(spec, { mac: MAC }), [
    ...['-m', '512M'],
    ...['-object', 'memory-backend-memfd,id=mem-vm1,size=512M,share=on'],
    ...['-numa', 'node,memdev=mem-vm1'],
    ...['-chardev', 'socket,id=chr-vm1,path=/run/vmlink/vm1,,a.sock,reconnect=1'],
    ...['-netdev', 'vhost-user,id=vm1,chardev=chr-vm1'],
    ...['-device', 'virtio-net-pci,netdev=vm1,mac=52:54:00:12:34:56,vectors=0,rx_queue_size=1024,tx_queue_size=1024'],
  ]);
});

test('a dialling vhost-user port makes QEMU the server, and memory defaults to 1024 MiB', () => {
  const spec = portSchema.parse({ name: 'vm2', network: 'lab', kind: 'vhost-user', connect: 'unix:/run/q/vm2.sock' });
  const args = qemuArgs(spec, { mac: MAC, id: 'n0' });
  assert.equal(args[1], '1024M');
  assert.equal(args[args.indexOf('-chardev') + 1], 'socket,id=chr-n0,path=/run/q/vm2.sock,server=on,wait=off');
});

test('more than one queue pair adds queues=N to the netdev and mq=on to the NIC', () => {
  const spec = portSchema.parse({ name: 'vm3', network: 'lab', kind: 'vhost-user', listen: 'unix:/s', queues: 4 });
  const args = qemuArgs(spec, { mac: MAC });
  assert.equal(args[args.indexOf('-netdev') + 1], 'vhost-user,id=vm3,chardev=chr-vm3,queues=4');
  assert.equal(
    args[args.indexOf('-device') + 1],
    'virtio-net-pci,netdev=vm3,mac=52:54:00:12:34:56,mq=on,vectors=0,rx_queue_size=1024,tx_queue_size=1024',
  );
});

test('the schema wants exactly one unix listen or connect address', () => {
  const r = portSchema.safeParse({ name: 'v', network: 'lab', kind: 'vhost-user', listen: 'tcp:127.0.0.1:1' });
  assert.equal(r.success, false);
  const both = portSchema.safeParse({
    name: 'v',
    network: 'lab',
    kind: 'vhost-user',
    listen: 'unix:/a',
    connect: 'unix:/b',
  });
  assert.equal(both.success, false);
  assert.match(JSON.stringify(both.error?.issues), /exactly one of listen or connect/);
});

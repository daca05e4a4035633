/**
 * libvirt's schema as the judge of printed domain XML: a device element
 * (and the domain elements it needs) wrapped in a minimal `<domain>` and
 * checked with `virt-xml-validate FILE domain` (Debian libvirt-clients).
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** A device element and the domain elements it needs, as the API gives them. */
export interface DeviceXml {
  xml: string;
  domain?: string | undefined;
}

/** A minimal domain around the device (with its own `<memory>` when the device needs one). */
export function domainXml(x: DeviceXml): string {
  return [
    "<domain type='kvm'>",
    '  <name>vmlink-test</name>',
    x.domain ?? "<memory unit='MiB'>512</memory>",
    "  <os><type arch='x86_64' machine='pc'>hvm</type></os>",
    '  <devices>',
    x.xml,
    '  </devices>',
    '</domain>',
    '',
  ].join('\n');
}

/** Writes the domain around `x` to DIR/NAME.xml and runs virt-xml-validate on it: exit status and output. */
export async function validateDomain(x: DeviceXml, dir: string, name: string): Promise<{ code: number; out: string }> {
  const file = join(dir, `${name}.xml`);
  await writeFile(file, domainXml(x));
  return new Promise((resolve) => {
    execFile('virt-xml-validate', [file, 'domain'], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, out: stdout + stderr });
    });
  });
}

/**
 * libvirt's own parser on the domain around `x`: `virsh -c test:///default`
 * (libvirt's in-process test driver, no libvirtd) defines it and dumps it
 * back; resolves with the exit status and the XML libvirt kept (or its error).
 */
export async function defineInLibvirt(x: DeviceXml, dir: string, name: string): Promise<{ code: number; out: string }> {
  const file = join(dir, `${name}-define.xml`);
  await writeFile(file, domainXml(x));
  return new Promise((resolve) => {
    execFile(
      'virsh',
      ['-q', '-c', 'test:///default', `define ${file}; dumpxml vmlink-test`],
      { timeout: 30_000 },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, out: stdout + stderr });
      },
    );
  });
}

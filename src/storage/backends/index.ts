/**
 * Backends by spec: the daemon (and the standalone entry point) build every
 * backend through {@link openBackend}; adding a kind means adding its module
 * and a case here.
 */
import type { Address } from '../../util/address.js';
import type { BlockBackend } from '../backend.js';
import { CowBackend } from './cow.js';
import { FileBackend } from './file.js';
import { MemoryBackend } from './memory.js';
import { RemoteBackend } from './remote.js';

export type BackendSpec =
  | { kind: 'memory'; size: number; readOnly?: boolean }
  | { kind: 'file'; path: string; size?: number; readOnly?: boolean; within?: readonly string[] | undefined }
  | { kind: 'remote'; address: Address; export?: string; readOnly?: boolean }
  | { kind: 'cow'; base: BackendSpec; overlay: BackendSpec; blockSize?: number; bitmapPath?: string };

/** Opens a backend (and, for cow, its parts). Rejects with the backend's ERR_* error. */
export async function openBackend(spec: BackendSpec): Promise<BlockBackend> {
  switch (spec.kind) {
    case 'memory':
      return new MemoryBackend(spec);
    case 'file':
      return FileBackend.open(spec);
    case 'remote':
      return RemoteBackend.connect(spec);
    case 'cow': {
      const base = await openBackend(spec.base);
      const overlay = await openBackend(spec.overlay);
      return CowBackend.create({ base, overlay, blockSize: spec.blockSize, bitmapPath: spec.bitmapPath });
    }
  }
}

export { CowBackend, FileBackend, MemoryBackend, RemoteBackend };

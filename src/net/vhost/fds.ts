/** File-descriptor housekeeping shared by the session and its rings. */
import { closeSync } from 'node:fs';

/** Closes `fd`, ignoring an fd that is already closed. */
export function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

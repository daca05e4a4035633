/** Errors of the fabric CA and host certificates (`vmlink ca init`, `vmlink host cert`). */
import { VmlinkError } from '../errors.js';

/** A certificate authority operation failed: openssl missing or failing, a CA or certificate in the way or absent, a bad host id. */
export class CaError extends VmlinkError {
  constructor(reason: string, options?: ErrorOptions) {
    super('ERR_CA', reason, options);
  }
}

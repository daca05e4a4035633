/** Errors of the guest image builder (`vmlink guest-image`). */
import { VmlinkError } from '../errors.js';

/** Something the guest image needs is missing or could not be written; the message says what to install or give. */
export class GuestImageError extends VmlinkError {
  constructor(message: string, options?: ErrorOptions) {
    super('ERR_GUEST_IMAGE', message, options);
  }
}

/** Errors of QoS control: admission and requests. Each has a stable code. */
import { VmlinkError } from '../errors.js';

export class QosError extends VmlinkError {}

/** A reservation does not fit in a shaped port's capacity: nothing was changed. */
export class QosAdmissionError extends QosError {
  override readonly status = 409;
  /** The shaped port whose capacity would be exceeded. */
  readonly port: string;
  constructor(port: string, message: string) {
    super('ERR_QOS_ADMISSION', message);
    this.port = port;
  }
}

/** A request that is valid on its own but not for this port (e.g. min above the port's max). */
export class QosRequestError extends QosError {
  override readonly status = 422;
  constructor(message: string) {
    super('ERR_QOS_REQUEST', message);
  }
}

/** Errors of the control plane (state store). Each has a stable code. */
import { VmlinkError } from '../errors.js';

export class ControlError extends VmlinkError {}

/** The state file exists but cannot be understood: the daemon refuses to start rather than lose it. */
export class StateCorruptError extends ControlError {
  constructor(file: string, reason: string, options?: ErrorOptions) {
    super(
      'ERR_STATE_CORRUPT',
      `state file ${file} is not usable: ${reason}; fix it, or move it away to start with an empty state ` +
        `(networks and ports added through the API would then be lost)`,
      options,
    );
  }
}

/** The state could not be read or written (permissions, disk full). */
export class StateIoError extends ControlError {
  constructor(what: string, file: string, reason: string, options?: ErrorOptions) {
    super(
      'ERR_STATE_IO',
      `cannot ${what} state file ${file}: ${reason}; check the path and permissions of host.state_dir`,
      options,
    );
  }
}

/** The journal next to the snapshot is damaged beyond a torn last record: the daemon refuses to start. */
export class StateJournalCorruptError extends ControlError {
  constructor(file: string, reason: string, options?: ErrorOptions) {
    super(
      'ERR_STATE_CORRUPT',
      `state journal ${file} is not usable: ${reason}; fix it, or move it away to start from the snapshot ` +
        `(state.json) alone (the changes made through the API since it was written would then be lost)`,
      options,
    );
  }
}

/** Errors of the daemon's control operations. Each has a stable code. */
import { VmlinkError } from '../errors.js';

/** An item declared in the config file cannot be replaced or deleted through the API. */
export class DeclaredInConfigError extends VmlinkError {
  constructor(what: 'network' | 'port', name: string, configPath: string | undefined) {
    super(
      'ERR_DECLARED_IN_CONFIG',
      `${what} "${name}" is declared in the config file${configPath ? ` ${configPath}` : ''}; ` +
        `to change or remove it, edit the config file and restart the daemon`,
    );
  }
}

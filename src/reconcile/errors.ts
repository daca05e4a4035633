/** Errors of desired state and reconciliation (config reload, conflicts between the config and the API). */
import { VmlinkError } from '../errors.js';

/** An item declared in the config file cannot be changed or deleted through the API. */
export class DeclaredInConfigError extends VmlinkError {
  override readonly status = 409;
  constructor(what: 'network' | 'port' | 'export' | 'link', name: string, configPath: string | undefined) {
    super(
      'ERR_DECLARED_IN_CONFIG',
      `${what} "${name}" is declared in the config file${configPath ? ` ${configPath}` : ''}; ` +
        'to change or remove it, edit the config file and reload the daemon (`vmlink reload` or SIGHUP)',
    );
  }
}

/** A reload was refused: the new config changes what only a restart applies, or would leave an API item without its network. Nothing was changed. */
export class ReloadRefusedError extends VmlinkError {
  override readonly status = 409;
  constructor(configPath: string, why: string) {
    super('ERR_RELOAD_REFUSED', `reload of ${configPath} refused, nothing was changed: ${why}`);
  }
}

/** The daemon was started without a config file (embedded use): there is nothing to reload from. */
export class ReloadUnavailableError extends VmlinkError {
  override readonly status = 409;
  constructor() {
    super(
      'ERR_RELOAD_UNAVAILABLE',
      'this daemon was started without a config file, so there is nothing to reload; start it with `vmlink daemon --config FILE`',
    );
  }
}

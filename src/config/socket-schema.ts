/**
 * `socket:` settings: who may use a unix socket vmlink creates (a port's
 * listening or bound socket, `storage.socket` for the NBD server's,
 * `host.control_socket` for the control API's). Every such socket is
 * created with exactly this mode whatever the umask; default 0600.
 */
import { z } from 'zod';

const ID_RE = /^(?:\d{1,10}|[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?)$/;

/** A user or group: a name, or a numeric id (number or digits). */
const idSchema = (field: string) =>
  z.union(
    [
      z.number().int().min(0).max(4294967294),
      z.string().regex(ID_RE, `${field} must be a ${field === 'owner' ? 'user' : 'group'} name or a numeric id`),
    ],
    { error: `${field} must be a ${field === 'owner' ? 'user' : 'group'} name or a numeric id` },
  );

export const socketAccessSchema = z.strictObject({
  /**
   * Permission bits as a quoted octal string, e.g. "0660" (owner and group
   * may connect); default "0600". A YAML number (0660 unquoted is decimal
   * 660) is refused.
   */
  mode: z
    .string('mode must be a quoted octal string like "0660" (unquoted, YAML reads 0660 as the number 660)')
    .regex(/^0?[0-7]{3}$/, 'mode must be an octal string of three digits with an optional leading 0, like "0660"')
    .optional(),
  /** Owner: user name or uid; default the daemon's user. Changing it needs root. */
  owner: idSchema('owner').optional(),
  /** Group: group name or gid; default the daemon's group (e.g. `kvm` or `libvirt-qemu` so QEMU may connect). */
  group: idSchema('group').optional(),
});

/**
 * The `vmlink` commands as plain data, walked from the commander definitions,
 * so completion scripts and the man page come from the same source as
 * `--help` and never drift from it.
 */
import type { Command } from 'commander';

/** One option of a command. */
export interface OptionNode {
  /** As written in help: `-w, --write <file>`. */
  flags: string;
  /** `--write`. */
  long: string | undefined;
  /** `-w`. */
  short: string | undefined;
  /** The option takes a value. */
  takesValue: boolean;
  description: string;
}

/** One command: its words from the root, and what it takes. */
export interface CommandNode {
  /** `['network', 'create']`; empty for `vmlink` itself. */
  path: string[];
  description: string;
  /** `[options] <name>` as commander prints it. */
  usage: string;
  options: OptionNode[];
  subcommands: CommandNode[];
}

/** The tree below `cmd` (the root program: every command). */
export function commandTree(cmd: Command, path: string[] = []): CommandNode {
  const options: OptionNode[] = cmd.options
    .filter((o) => !o.hidden)
    .map((o) => ({
      flags: o.flags,
      long: o.long,
      short: o.short,
      takesValue: o.required || o.optional,
      description: o.description,
    }));
  options.push({ flags: '-h, --help', long: '--help', short: '-h', takesValue: false, description: 'display help' });
  return {
    path,
    description: cmd.description(),
    usage: cmd.usage(),
    options,
    subcommands: cmd.commands.map((c) => commandTree(c, [...path, c.name()])),
  };
}

/** Every command of the tree, depth first (the root first). */
export function allCommands(node: CommandNode): CommandNode[] {
  return [node, ...node.subcommands.flatMap(allCommands)];
}

/** The root of `cmd`'s program. */
export function rootOf(cmd: Command): Command {
  let c = cmd;
  while (c.parent) c = c.parent;
  return c;
}

/**
 * Every field of a zod schema as a dotted path (`ports[].vnet_hdr`,
 * `overlay.peer_qos.*.capacity`), walked through its JSON Schema (zod's
 * `toJSONSchema`, input side): union members, array items, record values and
 * recursive references (a cow backend's `base`) included, once each.
 */
import { type ZodType, z } from 'zod';

interface Json {
  $ref?: string;
  anyOf?: Json[];
  oneOf?: Json[];
  allOf?: Json[];
  properties?: Record<string, Json>;
  items?: Json;
  additionalProperties?: Json | boolean;
}

/** Field paths of `schema`, in schema order, without duplicates. */
export function schemaFields(schema: ZodType): string[] {
  const root = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Json & {
    $defs?: Record<string, Json>;
    definitions?: Record<string, Json>;
  };
  const out = new Set<string>();
  const walk = (s: Json | undefined, path: string, seen: ReadonlySet<string>): void => {
    if (!s || typeof s !== 'object') return;
    if (s.$ref) {
      if (seen.has(s.$ref)) return;
      const name = s.$ref.split('/').pop() as string;
      walk(root.$defs?.[name] ?? root.definitions?.[name], path, new Set([...seen, s.$ref]));
      return;
    }
    for (const list of [s.anyOf, s.oneOf, s.allOf]) for (const o of list ?? []) walk(o, path, seen);
    for (const [k, v] of Object.entries(s.properties ?? {})) {
      const p = path ? `${path}.${k}` : k;
      out.add(p);
      walk(v, p, seen);
    }
    if (s.items) walk(s.items, `${path}[]`, seen);
    if (s.additionalProperties && typeof s.additionalProperties === 'object')
      walk(s.additionalProperties, `${path}.*`, seen);
  };
  walk(root, '', new Set());
  return [...out];
}

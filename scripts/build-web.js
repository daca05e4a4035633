#!/usr/bin/env node
/**
 * Bundles the web dashboard (web/, Preact + TSX) into dist/web with esbuild:
 * app.js, app.css and index.html, everything the daemon's HTTP endpoint serves
 * at `/` (src/api/web-routes.ts). Part of `npm run build`; `--watch` rebuilds
 * on change while developing.
 */
import { copyFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const out = join(root, 'dist', 'web');
await mkdir(out, { recursive: true });

/** @type {import('esbuild').BuildOptions} */
const options = {
  entryPoints: { app: join(root, 'web', 'main.tsx') },
  bundle: true,
  format: 'esm',
  target: ['es2022'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  minify: true,
  sourcemap: 'linked',
  outdir: out,
  logLevel: 'warning',
  legalComments: 'linked',
};

for (const f of ['index.html', 'app.css']) await copyFile(join(root, 'web', f), join(out, f));
if (process.argv.includes('--watch')) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
  console.log(`watching web/, writing ${out}`);
} else {
  const r = await esbuild.build({ ...options, metafile: true });
  const bytes = Object.values(r.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
  console.log(`web dashboard: ${out} (${Math.round(bytes / 1024)} KiB)`);
}

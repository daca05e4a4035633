#!/usr/bin/env node
// The `vmlink` command; the code is in src/cli/main.ts (compiled to dist/ by `npm run build`).
import { run } from '../dist/src/cli/main.js';

await run(process.argv);

// Transpiles the component (SRVDB_COMPONENT, else the `make component` output) into out/ with
// jco once, for the scripts beside this file; a later call finds out/srvdb.js and does nothing.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

export const out = join(here, 'out');

export function transpileOnce() {
  if (existsSync(join(out, 'srvdb.js'))) return;
  const wasm = process.env.SRVDB_COMPONENT ?? join(here, '../../target/wasm32-wasip2/component/srvdb.wasm');
  execFileSync(join(here, 'node_modules/.bin/jco'), [
    'transpile', wasm, '-o', out, '--name', 'srvdb',
    '--map', 'wasi:filesystem/*=../fs-writable.js#*',
  ], { stdio: 'inherit' });
}

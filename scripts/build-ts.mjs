// Compiles lib/ to dist/ (tsc) and marks the package's bins executable: tsc writes new files
// 0644, and `npx emae` in a clone of this repository runs dist/cli.js itself (npm sets the bit
// only on bins of packages it installs), so without this it fails with "Permission denied".
import { spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const r = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status ?? 1);

const { bin = {} } = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
for (const file of typeof bin === 'string' ? [bin] : Object.values(bin)) {
  const p = path.join(root, file);
  chmodSync(p, statSync(p).mode | 0o111);
}

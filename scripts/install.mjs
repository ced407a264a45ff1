#!/usr/bin/env node
// The package's install script: keep the prebuilt binary when one loads on this machine (as
// node-gyp-build's install command and sharp do), else build the addon from source.
// The source build is forced by EMAE_BUILD_FROM_SOURCE=1 or npm's --build-from-source
// (npm_config_build_from_source), and also runs when a source build exists already (a git
// checkout), since the loader prefers build/ to prebuilds/ and a stale one would win.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const truthy = (v) => v !== undefined && v !== '' && v !== '0' && v !== 'false';

function prebuiltLoads() {
  // In a child process: a binary that cannot load here (older glibc, another CPU) may also crash.
  const r = spawnSync(process.execPath, ['-e',
    'const f = require("node-gyp-build").resolve(process.argv[1]); require(f); console.log(f)', root], {
    cwd: root, encoding: 'utf8', env: { ...process.env, PREBUILDS_ONLY: '1' },
  });
  if (r.status === 0) return r.stdout.trim();
  if (existsSync(path.join(root, 'prebuilds'))) {
    console.log(`emae: the prebuilt binary does not load here, building from source:\n${r.stderr.trim().split('\n').slice(0, 4).join('\n')}`);
  }
  return undefined;
}

const forced = truthy(process.env.EMAE_BUILD_FROM_SOURCE) || truthy(process.env.npm_config_build_from_source);
const sourceBuild = ['Release', 'Debug'].some((c) => existsSync(path.join(root, 'build', c, 'emae.node')));
const prebuilt = forced || sourceBuild ? undefined : prebuiltLoads();
if (prebuilt) {
  console.log(`emae: using the prebuilt binary ${path.relative(root, prebuilt)} (set EMAE_BUILD_FROM_SOURCE=1 to build from source)`);
} else {
  const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'build-native.mjs')], { cwd: root, stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

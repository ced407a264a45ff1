#!/usr/bin/env node
// Builds the native addon with cmake-js. Environment:
//   EMAE_CUDA=AUTO|ON|OFF           build the CUDA backend (default AUTO: when nvcc is found)
//   EMAE_CUDA_ARCHITECTURES="80;90;90a"  CUDA architectures
//   EMAE_BUILD_DIR=build             build folder (the loader looks in build/Release by default)
//   EMAE_BUILD_TYPE=Release|Debug
//   EMAE_PREBUILT=ON                 the binary the npm package ships (scripts/prebuild.mjs)
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const cmakeJs = require.resolve('cmake-js/bin/cmake-js');

const cuda = (process.env.EMAE_CUDA ?? 'AUTO').toUpperCase();
if (!['AUTO', 'ON', 'OFF'].includes(cuda)) {
  console.error(`emae: EMAE_CUDA must be AUTO, ON or OFF (got '${process.env.EMAE_CUDA}')`);
  process.exit(1);
}
const options = ['--directory', root, '--out', process.env.EMAE_BUILD_DIR ?? 'build', `--CDEMAE_CUDA=${cuda}`,
  `--CDEMAE_PREBUILT=${process.env.EMAE_PREBUILT === 'ON' ? 'ON' : 'OFF'}`];
if (process.env.EMAE_CUDA_ARCHITECTURES) options.push(`--CDEMAE_CUDA_ARCHITECTURES=${process.env.EMAE_CUDA_ARCHITECTURES}`);
if (process.env.EMAE_BUILD_TYPE === 'Debug') options.push('--debug');
const jobs = process.env.CMAKE_BUILD_PARALLEL_LEVEL ?? '2';
const run = (command) => spawnSync(process.execPath, [cmakeJs, command, ...options], {
  cwd: root, stdio: 'inherit', env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: jobs },
});
// Configure every time (cmake-js `compile` skips it when a cache exists, so changed options
// were ignored); an unchanged configuration rebuilds nothing.
let result = run('configure');
if (result.status === 0) result = run('build');
if (result.status !== 0) {
  console.error('\nemae: the native build failed. It needs CMake >= 3.18, a C++17 compiler with OpenMP and,'
    + '\nfor the CUDA backend, nvcc (set EMAE_CUDA=OFF to build for the CPU only).');
  process.exit(result.status ?? 1);
}

#!/usr/bin/env node
// Builds the native addon with cmake-js. Environment:
//   EMAE_CUDA=AUTO|ON|OFF           build the CUDA backend (default AUTO: when nvcc is found)
//   EMAE_CUDA_ARCHITECTURES="80;90"  CUDA architectures
//   EMAE_BUILD_DIR=build             build folder (the loader looks in build/Release by default)
//   EMAE_BUILD_TYPE=Release|Debug
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
const args = [cmakeJs, 'compile', '--directory', root, '--out', process.env.EMAE_BUILD_DIR ?? 'build',
  `--CDEMAE_CUDA=${cuda}`];
if (process.env.EMAE_CUDA_ARCHITECTURES) args.push(`--CDEMAE_CUDA_ARCHITECTURES=${process.env.EMAE_CUDA_ARCHITECTURES}`);
if (process.env.EMAE_BUILD_TYPE === 'Debug') args.push('--debug');
const jobs = process.env.CMAKE_BUILD_PARALLEL_LEVEL ?? '2';
const result = spawnSync(process.execPath, args, {
  cwd: root, stdio: 'inherit', env: { ...process.env, CMAKE_BUILD_PARALLEL_LEVEL: jobs },
});
if (result.status !== 0) {
  console.error('\nemae: the native build failed. It needs CMake >= 3.18, a C++17 compiler with OpenMP and,'
    + '\nfor the CUDA backend, nvcc (set EMAE_CUDA=OFF to build for the CPU only).');
  process.exit(result.status ?? 1);
}

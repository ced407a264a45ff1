#!/usr/bin/env node
// Builds the prebuilt addon the npm package ships (run by `prepack`), so that `npm install emae`
// on linux-x64 (glibc) needs no compiler. It goes where node-gyp-build looks:
// prebuilds/linux-x64/emae.napi.glibc.node — Node-API, so one file serves every Node version —
// with the CUDA backend for sm_80, sm_90 and sm_90a when nvcc is found (cudart linked
// statically), the CPU backend alone otherwise, and libgomp.so.1 beside it (EMAE_PREBUILT).
// Elsewhere nothing is prebuilt and the install script builds from source.
// Environment: EMAE_CUDA and EMAE_CUDA_ARCHITECTURES as for build-native.mjs (defaults AUTO and
// "80;90;90a"), EMAE_PREBUILD_DIR=build-prebuild (the cmake-js build folder, kept for
// incremental rebuilds).
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outDir = path.join(root, 'prebuilds', 'linux-x64');
const glibc = process.report?.getReport().header.glibcVersionRuntime;

rmSync(path.join(root, 'prebuilds'), { recursive: true, force: true });
if (process.platform !== 'linux' || process.arch !== 'x64' || !glibc) {
  console.log(`emae: no prebuilt binary for ${process.platform}-${process.arch}${process.platform === 'linux' && !glibc ? ' (musl)' : ''}; ` +
    'the package will build the addon from source when installed');
  process.exit(0);
}

const buildDir = process.env.EMAE_PREBUILD_DIR ?? 'build-prebuild';
const started = Date.now();
const build = spawnSync(process.execPath, [path.join(root, 'scripts', 'build-native.mjs')], {
  cwd: root, stdio: 'inherit',
  env: {
    ...process.env, EMAE_BUILD_DIR: buildDir, EMAE_PREBUILT: 'ON', EMAE_BUILD_TYPE: 'Release',
    EMAE_CUDA_ARCHITECTURES: process.env.EMAE_CUDA_ARCHITECTURES ?? '80;90;90a',
  },
});
if (build.status !== 0) process.exit(build.status ?? 1);

const built = path.resolve(root, buildDir, 'Release', 'emae.node');
// The libgomp the addon was linked against, as the dynamic linker resolves it here.
const ldd = (file) => execFileSync('ldd', [file], { encoding: 'utf8' });
const gomp = /libgomp\.so\.1 => (\S+)/.exec(ldd(built))?.[1];
if (!gomp) throw new Error(`emae: ldd does not list libgomp.so.1 for ${built}`);
mkdirSync(outDir, { recursive: true });
const addon = path.join(outDir, 'emae.napi.glibc.node');
copyFileSync(built, addon);
copyFileSync(realpathSync(gomp), path.join(outDir, 'libgomp.so.1'));
// The MPI plugin (built when CMake found MPI), which the addon loads from its own folder under
// mpirun/srun; it links the MPI library of the machine it was built on (Open MPI 4: libmpi.so.40).
const mpiPlugin = path.resolve(root, buildDir, 'Release', 'emae_mpi.so');
rmSync(path.join(outDir, 'emae_mpi.so'), { force: true });
if (existsSync(mpiPlugin)) copyFileSync(mpiPlugin, path.join(outDir, 'emae_mpi.so'));

// The copy must load from its new place and find its libgomp there, not the system's.
const deps = ldd(addon);
if (!deps.includes(`libgomp.so.1 => ${path.join(outDir, 'libgomp.so.1')}`)) throw new Error(`emae: the prebuilt addon does not pick up the libgomp beside it:\n${deps}`);
if (/libcudart/.test(deps)) throw new Error(`emae: the prebuilt addon links the CUDA runtime dynamically:\n${deps}`);
const info = JSON.parse(execFileSync(process.execPath, ['-e',
  `const a = require(${JSON.stringify(addon)}); console.log(JSON.stringify(a.cudaInfo()))`], { encoding: 'utf8' }));
// What the machines that load it need: the newest glibc and libstdc++ symbol versions it uses.
const newest = (re) => {
  const found = [...execFileSync('objdump', ['-T', addon], { encoding: 'utf8' }).matchAll(re)].map((m) => m[1]);
  return found.sort((a, b) => a.localeCompare(b, 'en', { numeric: true })).at(-1);
};
const mib = (f) => (statSync(f).size / 2 ** 20).toFixed(1);
console.log(`emae: prebuilt ${path.relative(root, addon)} (${mib(addon)} MiB, ` +
  `${info.compiled ? `CPU + CUDA ${info.architectures}` : 'CPU only'}; needs glibc ${newest(/GLIBC_([\d.]+)/g)} and ` +
  `libstdc++ GLIBCXX_${newest(/GLIBCXX_([\d.]+)/g)}) ` +
  `+ libgomp.so.1 (${mib(path.join(outDir, 'libgomp.so.1'))} MiB)${existsSync(mpiPlugin) ? ' + emae_mpi.so' : ''} in ${((Date.now() - started) / 1000).toFixed(0)} s`);

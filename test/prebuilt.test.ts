// Finding the addon: a source build (build/) before the prebuilt binary (prebuilds/), both beaten
// by EMAE_NATIVE_PATH, and a failure that says how to fix it; the install script keeping a
// prebuilt binary that loads and building from source otherwise. Each case runs lib/native.ts
// (or scripts/install.mjs) in a child process inside a temporary copy of the package layout,
// with a copy of the addon this checkout uses standing in for the prebuilt one.
import test from 'ava';
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { nativeBinding } from '../lib/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const linuxGlibc = process.platform === 'linux' && process.arch === 'x64' &&
  !!(process.report.getReport() as { header: { glibcVersionRuntime?: string } }).header.glibcVersionRuntime;
const prebuiltName = path.join('prebuilds', 'linux-x64', 'emae.napi.glibc.node');
const env = () => {
  const e: NodeJS.ProcessEnv = { ...process.env };
  for (const k of ['EMAE_NATIVE_PATH', 'EMAE_BUILD_FROM_SOURCE', 'npm_config_build_from_source', 'EMAE_PREBUILD', 'PREBUILDS_ONLY']) delete e[k];
  return e;
};

// each layout holds copies of the addon (megabytes): removed when the file's tests are done
const layouts: string[] = [];
test.after.always(() => { for (const dir of layouts) rmSync(dir, { recursive: true, force: true }); });

/** A package folder with lib/native.ts, the given .node files and a probe printing what loaded. */
function layout(files: Record<string, string | Buffer>): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'emae-prebuilt-'));
  layouts.push(dir);
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'emae', type: 'module' }));
  mkdirSync(path.join(dir, 'lib'));
  copyFileSync(path.join(root, 'lib', 'native.ts'), path.join(dir, 'lib', 'native.ts'));
  symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
  writeFileSync(path.join(dir, 'probe.ts'), `
    import { native, nativeBinding } from './lib/native.ts';
    try {
      const b = nativeBinding();
      console.log(JSON.stringify({ ...b, threads: native().defaultThreads() }));
    } catch (err) {
      console.log(JSON.stringify({ error: (err as Error).message }));
    }`);
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    if (typeof content === 'string') copyFileSync(content, path.join(dir, name));
    else writeFileSync(path.join(dir, name), content);
  }
  return dir;
}

/** Runs node with args; the child processes of the tests run side by side. */
function node(args: string[], cwd: string, childEnv: NodeJS.ProcessEnv): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd, env: childEnv, encoding: 'utf8' }, (err, stdout, stderr) =>
      resolve({ status: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }));
  });
}

async function probe(dir: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<{ path?: string; prebuilt?: boolean; fromEnv?: boolean; threads?: number; error?: string }> {
  const r = await node(['--import=tsx', 'probe.ts'], dir, { ...env(), ...extraEnv });
  if (r.status !== 0) throw new Error(`probe failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const addon = nativeBinding().path;  // the addon the rest of the suite uses, built here

test('this checkout reports the addon it loaded', (t) => {
  const b = nativeBinding();
  t.true(existsSync(b.path), b.path);
  t.is(b.fromEnv, !!process.env.EMAE_NATIVE_PATH);
  if (!b.fromEnv) t.is(b.prebuilt, b.path.startsWith(path.join(root, 'prebuilds') + path.sep), b.path);
});

test('a package with only the prebuilt binary loads it and says so', async (t) => {
  if (!linuxGlibc) return t.pass('prebuilt binaries are made for linux-x64 glibc only');
  const dir = layout({ [prebuiltName]: addon });
  const r = await probe(dir);
  t.is(r.error, undefined);
  t.is(r.path, path.join(dir, prebuiltName));
  t.true(r.prebuilt);
  t.false(r.fromEnv);
  t.true(r.threads! >= 1, 'the loaded addon answers');
});

test('a source build wins over the prebuilt binary (--build-from-source takes effect)', async (t) => {
  if (!linuxGlibc) return t.pass('prebuilt binaries are made for linux-x64 glibc only');
  const dir = layout({ [prebuiltName]: addon, 'build/Release/emae.node': addon });
  const r = await probe(dir);
  t.is(r.path, path.join(dir, 'build', 'Release', 'emae.node'));
  t.false(r.prebuilt);
});

test('EMAE_NATIVE_PATH wins over both', async (t) => {
  const dir = layout({ [prebuiltName]: addon, 'build/Release/emae.node': addon, 'elsewhere/mine.node': addon });
  const r = await probe(dir, { EMAE_NATIVE_PATH: path.join(dir, 'elsewhere', 'mine.node') });
  t.is(r.error, undefined);
  t.is(r.path, path.join(dir, 'elsewhere', 'mine.node'));
  t.true(r.fromEnv);
  t.false(r.prebuilt);
});

test('a missing EMAE_NATIVE_PATH is an error, not a silent fallback', async (t) => {
  const dir = layout({ 'build/Release/emae.node': addon });
  const r = await probe(dir, { EMAE_NATIVE_PATH: path.join(dir, 'nope.node') });
  t.is(r.path, undefined);
  t.regex(r.error!, /EMAE_NATIVE_PATH=.*nope\.node: not found/);
  t.regex(r.error!, /Possible solutions/);
});

test('no addon at all: the error says where it looked and how to fix it', async (t) => {
  const dir = layout({});
  const r = await probe(dir);
  t.regex(r.error!, /could not load the native addon/);
  t.regex(r.error!, /build\/Release/);
  t.regex(r.error!, /prebuilds/);
  t.regex(r.error!, /EMAE_BUILD_FROM_SOURCE=1 npm rebuild emae/);
  t.regex(r.error!, /EMAE_NATIVE_PATH/);
});

test('a broken prebuilt binary: the error names the file and the fixes', async (t) => {
  if (!linuxGlibc) return t.pass('prebuilt binaries are made for linux-x64 glibc only');
  const dir = layout({ [prebuiltName]: Buffer.from('not an ELF file') });
  const r = await probe(dir);
  t.true(r.error!.includes(path.join(dir, prebuiltName)), r.error);
  t.regex(r.error!, /Possible solutions/);
});

/**
 * Runs scripts/install.mjs in a layout whose build-native.mjs only leaves a marker, so what the
 * install script decided shows without compiling anything.
 */
async function install(files: Record<string, string | Buffer>, extraEnv: NodeJS.ProcessEnv = {}) {
  const dir = layout({
    ...files,
    'scripts/install.mjs': path.join(root, 'scripts', 'install.mjs'),
    'scripts/build-native.mjs': Buffer.from("import { writeFileSync } from 'node:fs'; writeFileSync('built-from-source', '');"),
  });
  const r = await node(['scripts/install.mjs'], dir, { ...env(), ...extraEnv });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, built: existsSync(path.join(dir, 'built-from-source')) };
}

test('install keeps a prebuilt binary that loads and builds nothing', async (t) => {
  if (!linuxGlibc) return t.pass('prebuilt binaries are made for linux-x64 glibc only');
  const r = await install({ [prebuiltName]: addon });
  t.is(r.status, 0, r.stderr);
  t.false(r.built);
  t.regex(r.stdout, /using the prebuilt binary prebuilds\/linux-x64\/emae\.napi\.glibc\.node/);
});

test('install builds from source when forced, when the prebuilt binary fails, or when there is none', async (t) => {
  if (!linuxGlibc) return t.pass('prebuilt binaries are made for linux-x64 glibc only');
  const [forced, npmFlag, notForced, broken, none, existing] = await Promise.all([
    install({ [prebuiltName]: addon }, { EMAE_BUILD_FROM_SOURCE: '1' }),
    install({ [prebuiltName]: addon }, { npm_config_build_from_source: 'true' }),
    install({ [prebuiltName]: addon }, { EMAE_BUILD_FROM_SOURCE: '0' }),
    install({ [prebuiltName]: Buffer.from('not an ELF file') }),
    install({}),
    install({ [prebuiltName]: addon, 'build/Release/emae.node': addon }),
  ]);
  t.true(forced.built, 'EMAE_BUILD_FROM_SOURCE=1');
  t.true(npmFlag.built, 'npm --build-from-source');
  t.false(notForced.built, 'EMAE_BUILD_FROM_SOURCE=0');
  t.true(broken.built, 'a prebuilt binary that does not load');
  t.regex(broken.stdout, /does not load here, building from source/);
  t.true(none.built, 'no prebuilt binary');
  t.true(existing.built, 'an existing source build is kept current');
});

const cli = (args: string[], extraEnv: NodeJS.ProcessEnv = {}) => node(['--import=tsx', 'lib/cli.ts', ...args], root, { ...process.env, ...extraEnv });

test('emae info names the addon file and whether it is prebuilt', async (t) => {
  const b = nativeBinding();
  const r = await cli(['info']);
  t.is(r.status, 0, r.stderr);
  const kind = `${b.prebuilt ? 'prebuilt' : 'built from source'}${b.fromEnv ? ', from EMAE_NATIVE_PATH' : ''}`;
  t.true(r.stdout.includes(`native addon: ${b.path} (${kind})\n`), r.stdout);
  t.deepEqual(JSON.parse((await cli(['info', '--json'])).stdout).nativeAddon, b);
});

test('emae info on a binary in a prebuilds/ folder says prebuilt', async (t) => {
  const dir = layout({ [prebuiltName]: addon });
  const file = path.join(dir, prebuiltName);
  const r = await cli(['info'], { EMAE_NATIVE_PATH: file });
  t.is(r.status, 0, r.stderr);
  t.true(r.stdout.includes(`native addon: ${file} (prebuilt, from EMAE_NATIVE_PATH)\n`), r.stdout);
});

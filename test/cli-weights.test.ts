// The CLI with `--weights` (issue 15, item 4): an emae checkpoint or weights file records its
// model config, so `reconstruct`, `probe` and `consistency` need no --config; a --config or data
// that disagrees with the file, a corrupted file and a file without a config are clear errors.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { EMAE, saveCheckpoint, writeSafetensors, type EMAEConfig } from '../lib/index.js';

const cli = (...args: string[]) => spawnSync(process.execPath, ['--import=tsx', 'lib/cli.ts', ...args], { encoding: 'utf8' });
const dir = mkdtempSync(path.join(tmpdir(), 'emae-cli-weights-'));
const tiny = { patchSize: 4, embedDim: 32, depth: 1, numHeads: 2, decoderEmbedDim: 32, decoderDepth: 1, decoderNumHeads: 2, mlpRatio: 2 };
const ckpt = path.join(dir, 'ckpt-3.safetensors');
const weights = path.join(dir, 'weights.safetensors');
const gray = path.join(dir, 'gray-ckpt.safetensors');
const cpu = ['--device', 'cpu', '--threads', '1'];

/** An IDX file of `count` random `size`×`size` grayscale images. */
function idx(file: string, count: number, size: number): string {
  const bytes = new Uint8Array(16 + count * size * size);
  new DataView(bytes.buffer).setUint32(0, 0x803);
  new DataView(bytes.buffer).setUint32(4, count);
  new DataView(bytes.buffer).setUint32(8, size);
  new DataView(bytes.buffer).setUint32(12, size);
  for (let i = 16; i < bytes.length; i++) bytes[i] = (i * 37) % 256;
  writeFileSync(file, bytes);
  return file;
}

test.before(async () => {
  const make = async (config: EMAEConfig) => EMAE.create({ ...tiny, ...config, device: 'cpu', threads: 1 });
  const model = await make({ imageSize: 16, parts: 2, seed: 3 });
  await saveCheckpoint(ckpt, model, { step: 3 });
  await model.saveWeights(weights);
  await model.dispose();
  const oneChannel = await make({ imageSize: 16, channels: 1 });
  await saveCheckpoint(gray, oneChannel, { step: 1 });
  await oneChannel.dispose();
});

const lastJson = (stdout: string) => JSON.parse(stdout.trim().split('\n').pop()!);

test('reconstruct, consistency and probe take --weights <checkpoint> with no --config', async (t) => {
  const out = path.join(dir, 'rec');
  const rec = cli('reconstruct', '--weights', ckpt, ...cpu, '--data', 'synthetic:8', '--count', '2', '--scale', '1', '--out', out);
  t.is(rec.status, 0, rec.stderr);
  const meta = await sharp(path.join(out, 'reconstruction-1.png')).metadata();
  t.is(meta.height, 16, 'the image size saved in the checkpoint');
  t.is(meta.width, 6 * 16 + 5 * 2, 'original | 2 masked | 2 reconstructions | assembled: the saved parts');
  const cons = cli('consistency', '--weights', ckpt, ...cpu, '--data', 'synthetic:8', '--count', '4', '--draws', '2');
  t.is(cons.status, 0, cons.stderr);
  t.true(lastJson(cons.stdout).consistency > 0);
  const probe = cli('probe', '--weights', weights, ...cpu, '--data', 'synthetic:32', '--test-data', 'synthetic:16', '--epochs', '2');
  t.is(probe.status, 0, probe.stderr);
  t.like(lastJson(probe.stdout), { train: 32, test: 16 });
});

test('flags still override the training keys of the saved config', async (t) => {
  const out = path.join(dir, 'rec-k4');
  const rec = cli('reconstruct', '--weights', ckpt, ...cpu, '--parts', '4', '--data', 'synthetic:4', '--count', '1', '--scale', '1', '--out', out);
  t.is(rec.status, 0, rec.stderr);
  t.is((await sharp(path.join(out, 'reconstruction-0.png')).metadata()).width, 10 * 16 + 9 * 2);
});

test('a --config or --image-size that disagrees with the weights is a clear error', (t) => {
  const config = path.join(dir, 'deeper.json');
  writeFileSync(config, JSON.stringify({ ...tiny, depth: 2 }));
  const r = cli('consistency', '--weights', ckpt, '--config', config, ...cpu, '--data', 'synthetic:4', '--count', '2');
  t.is(r.status, 1);
  t.regex(r.stderr, /depth 1 in the file, 2 in --config/);
  t.true(r.stderr.includes('ckpt-3.safetensors'), r.stderr);
  t.notRegex(r.stderr, /missing/);
  const same = path.join(dir, 'same.json');
  writeFileSync(same, JSON.stringify(tiny));
  const ok = cli('consistency', '--weights', ckpt, '--config', same, ...cpu, '--data', 'synthetic:4', '--count', '2', '--draws', '2');
  t.is(ok.status, 0, ok.stderr);
  const size = cli('consistency', '--weights', ckpt, '--image-size', '32', ...cpu, '--data', 'synthetic:4', '--count', '2');
  t.is(size.status, 1);
  t.regex(size.stderr, /imageSize|image size/);
  t.regex(size.stderr, /16/);
  t.regex(size.stderr, /32/);
});

test('data that does not fit the saved config is a clear error naming both; --pad-to still applies', (t) => {
  const gray16 = idx(path.join(dir, 'gray16-idx3-ubyte'), 8, 16);
  const r = cli('consistency', '--weights', ckpt, ...cpu, '--data', `idx:${gray16}`, '--count', '2');
  t.is(r.status, 1);
  t.regex(r.stderr, /1 channel/);
  t.regex(r.stderr, /3 channels/);
  t.true(r.stderr.includes('ckpt-3.safetensors'), r.stderr);
  const gray12 = idx(path.join(dir, 'gray12-idx3-ubyte'), 8, 12);
  const small = cli('consistency', '--weights', gray, ...cpu, '--data', `idx:${gray12}`, '--count', '2');
  t.is(small.status, 1);
  t.regex(small.stderr, /12×12/);
  t.regex(small.stderr, /16/);
  t.regex(small.stderr, /--pad-to/);
  const padded = cli('consistency', '--weights', gray, ...cpu, '--data', `idx:${gray12}`, '--pad-to', '16', '--count', '2', '--draws', '2');
  t.is(padded.status, 0, padded.stderr);
  t.is(lastJson(padded.stdout).images, 2);
});

test('a corrupted checkpoint is reported as corrupted, not as missing tensors', (t) => {
  const bad = path.join(dir, 'corrupted.safetensors');
  const bytes = readFileSync(ckpt);
  bytes[bytes.length - 3] ^= 0x40;
  writeFileSync(bad, bytes);
  const r = cli('reconstruct', '--weights', bad, ...cpu, '--data', 'synthetic:4', '--count', '1', '--out', path.join(dir, 'never'));
  t.is(r.status, 1);
  t.regex(r.stderr, /corrupt/);
  t.true(r.stderr.includes(bad));
  t.notRegex(r.stderr, /cls_token|missing/);
  const short = path.join(dir, 'short.safetensors');
  writeFileSync(short, readFileSync(ckpt).subarray(0, 1000));
  const s = cli('reconstruct', '--weights', short, ...cpu, '--data', 'synthetic:4', '--count', '1', '--out', path.join(dir, 'never'));
  t.is(s.status, 1);
  t.regex(s.stderr, /corrupt/);
  t.notRegex(s.stderr, /cls_token|missing/);
});

test('weights without a saved config need --config or --preset, and the error says so', async (t) => {
  const model = await EMAE.create({ ...tiny, imageSize: 16, device: 'cpu', threads: 1 });
  const state = await model.stateDict();
  const plain = path.join(dir, 'torch.safetensors');
  writeFileSync(plain, writeSafetensors(Object.fromEntries(model.paramInfo().map((p) => [p.name, { data: state[p.name], shape: p.shape }])), { format: 'pt' }));
  await model.dispose();
  const r = cli('consistency', '--weights', plain, ...cpu, '--data', 'synthetic:4', '--count', '2');
  t.is(r.status, 1);
  t.regex(r.stderr, /no (emae |model )?config/);
  t.regex(r.stderr, /--config/);
  const config = path.join(dir, 'tiny.json');
  writeFileSync(config, JSON.stringify(tiny));
  const ok = cli('consistency', '--weights', plain, '--config', config, '--image-size', '16', ...cpu, '--data', 'synthetic:4', '--count', '2', '--draws', '2');
  t.is(ok.status, 0, ok.stderr);
});

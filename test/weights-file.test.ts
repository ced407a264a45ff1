// What an emae safetensors file says about itself (issue 15, item 4): weights and checkpoints
// carry the model config and a SHA-256 in their metadata; loadWeights takes a checkpoint too; a
// corrupted, truncated or other-architecture file is refused as such, with the model unchanged;
// a file without emae metadata (as PyTorch writes one) still loads.
import test from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  EMAE, loadCheckpoint, readSafetensors, readWeightsInfo, saveCheckpoint, writeSafetensors, type EMAEConfig,
} from '../lib/index.js';
import { tempDir, unchanged } from './helpers/refusals.js';

const tiny: EMAEConfig = {
  imageSize: 8, patchSize: 2, channels: 3, embedDim: 16, depth: 1, numHeads: 2, decoderEmbedDim: 8,
  decoderDepth: 1, decoderNumHeads: 2, mlpRatio: 2, maskRatio: 0.75, device: 'cpu', threads: 1,
};
/** The user-level keys a file records: the architecture and the training-objective keys. */
const recorded = {
  imageSize: 8, patchSize: 2, channels: 3, embedDim: 16, depth: 1, numHeads: 2, decoderEmbedDim: 8, decoderDepth: 1,
  decoderNumHeads: 2, mlpRatio: 2, maskRatio: 0.75, parts: 4, normPixLoss: true, consistencyWeight: 1,
  consistencyDistance: 'mse', layerNormEps: 1e-6,
};

async function create(t: { teardown: (fn: () => void) => void }, extra: EMAEConfig = {}): Promise<EMAE> {
  const model = await EMAE.create({ ...tiny, ...extra });
  t.teardown(() => { void model.dispose(); });
  return model;
}

/** A copy of `bytes` with one bit flipped in the last tensor's data. */
function flipped(bytes: Uint8Array): Uint8Array {
  const out = Uint8Array.from(bytes);
  out[out.length - 3] ^= 0x40;
  return out;
}

// ---- what the files record --------------------------------------------------------------------

test('saveWeights records the config and a checksum as string metadata, format still pt', async (t) => {
  const model = await create(t, { seed: 4, consistencyDistance: 'l1', parts: 2 });
  const dir = await tempDir(t, 'emae-weights-');
  const file = path.join(dir, 'w.safetensors');
  await model.saveWeights(file);
  const { metadata } = readSafetensors(await readFile(file));
  t.is(metadata.format, 'pt', "safetensors.torch.load_file needs format 'pt'");
  t.true(Object.values(metadata).every((v) => typeof v === 'string'));
  t.regex(metadata.sha256, /^[0-9a-f]{64}$/);
  const saved = JSON.parse(metadata.emae_config);
  t.deepEqual(saved, { ...recorded, consistencyDistance: 'l1', parts: 2 }, 'no device, threads, seed or cpuMatmul');

  const info = await readWeightsInfo(file);
  t.is(info.kind, 'weights');
  t.deepEqual(info.config, saved);
  t.true(info.verified);
  t.deepEqual(info.tensors['decoder_pred.weight'], { dtype: 'F32', shape: [12, 8] });
  // the recorded config builds the same architecture
  const rebuilt = await EMAE.create({ ...info.config, device: 'cpu', threads: 1 });
  t.teardown(() => { void rebuilt.dispose(); });
  await rebuilt.loadWeights(file);
  t.deepEqual(await rebuilt.stateDict(), await model.stateDict());
});

test('a checkpoint records the config, the trainer state and extra metadata', async (t) => {
  const model = await create(t);
  const dir = await tempDir(t, 'emae-weights-');
  const file = path.join(dir, 'ckpt.safetensors');
  await saveCheckpoint(file, model, { step: 7 }, { trainer_options: JSON.stringify({ blr: 1e-3 }) });
  const info = await readWeightsInfo(file);
  t.is(info.kind, 'checkpoint');
  t.deepEqual(info.config, recorded);
  t.true(info.verified);
  t.deepEqual(JSON.parse(info.metadata.trainer_options), { blr: 1e-3 });
  t.deepEqual(JSON.parse(info.metadata.trainer), { step: 7 });
  t.deepEqual(await loadCheckpoint(file, await create(t, { seed: 9 })), { step: 7 });
});

test('saveCheckpoint: extra metadata must be strings and may not replace the reserved keys', async (t) => {
  const model = await create(t);
  const dir = await tempDir(t, 'emae-weights-');
  const file = path.join(dir, 'ckpt.safetensors');
  await t.throwsAsync(saveCheckpoint(file, model, {}, { sha256: 'x' }), { instanceOf: RangeError, message: /sha256/ });
  await t.throwsAsync(saveCheckpoint(file, model, {}, { emae_config: '{}' }), { instanceOf: RangeError, message: /emae_config/ });
  await t.throwsAsync(saveCheckpoint(file, model, {}, { epoch: 3 as unknown as string }), { instanceOf: TypeError, message: /epoch/ });
  await t.throwsAsync(saveCheckpoint(file, model, {}, 'x' as never), { instanceOf: TypeError, message: /metadata/ });
  await t.throwsAsync(readFile(file), { code: 'ENOENT' }, 'nothing written');
});

// ---- loadWeights with a checkpoint ------------------------------------------------------------

test('loadWeights accepts a checkpoint: its parameters, not its optimizer state', async (t) => {
  const model = await create(t);
  const dir = await tempDir(t, 'emae-weights-');
  const file = path.join(dir, 'ckpt.safetensors');
  // non-zero moments in the file, so loading them by mistake would show
  const moments = await model.getOptimizerState();
  const fill = (m: Record<string, Float32Array>) => Object.fromEntries(Object.entries(m).map(([k, v]) => [k, v.map(() => 0.5)]));
  await model.setOptimizerState({ step: 3, expAvg: fill(moments.expAvg), expAvgSq: fill(moments.expAvgSq) });
  await saveCheckpoint(file, model, { step: 3 });
  const other = await create(t, { seed: 5 });
  t.notDeepEqual(await other.stateDict(), await model.stateDict(), 'another seed: other weights before the load');
  const optim = await other.getOptimizerState();
  await other.loadWeights(file);
  t.deepEqual(await other.stateDict(), await model.stateDict());
  t.deepEqual(await other.getOptimizerState(), optim);
});

// ---- corrupted files --------------------------------------------------------------------------

test('a weights file or checkpoint with a flipped bit is reported as corrupt, model unchanged', async (t) => {
  const model = await create(t);
  const dir = await tempDir(t, 'emae-weights-');
  const weights = path.join(dir, 'w.safetensors'), ckpt = path.join(dir, 'ckpt.safetensors');
  await model.saveWeights(weights);
  await saveCheckpoint(ckpt, model, { step: 0 });
  const target = await create(t, { seed: 6 });
  for (const file of [weights, ckpt]) {
    const bad = path.join(dir, `bad-${path.basename(file)}`);
    await writeFile(bad, flipped(await readFile(file)));
    await unchanged(t, target, async () => {
      const err = await t.throwsAsync(target.loadWeights(bad), { instanceOf: RangeError });
      t.true(err!.message.includes(bad), err!.message);
      t.regex(err!.message, /corrupt/);
      t.notRegex(err!.message, /missing/);
      await t.throwsAsync(readWeightsInfo(bad), { instanceOf: RangeError, message: /corrupt/ });
    });
  }
  // the saved config is covered by the checksum too
  const { tensors, metadata } = readSafetensors(await readFile(weights));
  const edited = path.join(dir, 'edited.safetensors');
  await writeFile(edited, writeSafetensors(tensors, { ...metadata, emae_config: metadata.emae_config.replace('"depth":1', '"depth":2') }));
  await unchanged(t, target, async () => {
    await t.throwsAsync(target.loadWeights(edited), { instanceOf: RangeError, message: /corrupt/ });
  });
});

test('a truncated weights file or checkpoint is reported as corrupt, never as missing tensors', async (t) => {
  const model = await create(t);
  const dir = await tempDir(t, 'emae-weights-');
  const weights = path.join(dir, 'w.safetensors'), ckpt = path.join(dir, 'ckpt.safetensors');
  await model.saveWeights(weights);
  await saveCheckpoint(ckpt, model, { step: 0 });
  const target = await create(t, { seed: 6 });
  for (const file of [weights, ckpt]) {
    const bytes = await readFile(file);
    for (const keep of [bytes.length - 100, 20, 3]) {
      const short = path.join(dir, `short-${keep}-${path.basename(file)}`);
      await writeFile(short, bytes.subarray(0, keep));
      await unchanged(t, target, async () => {
        const err = await t.throwsAsync(target.loadWeights(short), { instanceOf: RangeError });
        t.true(err!.message.includes(short), err!.message);
        t.regex(err!.message, /corrupt/);
        t.notRegex(err!.message, /cls_token|missing/);
      });
    }
  }
});

// ---- another architecture ---------------------------------------------------------------------

test('a file saved for another architecture is refused naming the config difference', async (t) => {
  const deeper = await create(t, { depth: 2, numHeads: 4 });
  const dir = await tempDir(t, 'emae-weights-');
  const weights = path.join(dir, 'deep.safetensors'), ckpt = path.join(dir, 'deep-ckpt.safetensors');
  await deeper.saveWeights(weights);
  await saveCheckpoint(ckpt, deeper, { step: 0 });
  const model = await create(t);
  for (const file of [weights, ckpt]) {
    await unchanged(t, model, async () => {
      const err = await t.throwsAsync(model.loadWeights(file), { instanceOf: RangeError });
      t.regex(err!.message, /depth 2 in the file, 1 in this model/);
      t.regex(err!.message, /numHeads 4 in the file, 2 in this model/, 'same shapes, still another network');
      t.notRegex(err!.message, /missing|unexpected tensor/);
    });
  }
  await unchanged(t, model, async () => {
    await t.throwsAsync(loadCheckpoint(ckpt, model), { instanceOf: RangeError, message: /depth 2 in the file, 1 in this model/ });
  });
  // the training-objective keys may differ: an MAE-trained (K = 1) file loads into an EMAE model
  const mae = await create(t, { parts: 1, consistencyWeight: 0, seed: 7 });
  await mae.saveWeights(weights);
  t.notDeepEqual(await model.stateDict(), await mae.stateDict(), 'another seed: other weights before the load');
  await model.loadWeights(weights);
  t.deepEqual(await model.stateDict(), await mae.stateDict());
});

// ---- files without emae metadata --------------------------------------------------------------

test('weights without emae metadata (as PyTorch saves a state dict) still load', async (t) => {
  const model = await create(t);
  const dir = await tempDir(t, 'emae-weights-');
  const file = path.join(dir, 'torch.safetensors');
  const state = await model.stateDict();
  await writeFile(file, writeSafetensors(Object.fromEntries(model.paramInfo().map((p) => [p.name, { data: state[p.name], shape: p.shape }])), { format: 'pt' }));
  const info = await readWeightsInfo(file);
  t.is(info.kind, 'weights');
  t.is(info.config, undefined);
  t.false(info.verified);
  const other = await create(t, { seed: 8 });
  await other.loadWeights(file);
  t.deepEqual(await other.stateDict(), state);
});

test('readWeightsInfo: bad arguments and files', async (t) => {
  const dir = await tempDir(t, 'emae-weights-');
  await t.throwsAsync(readWeightsInfo(42 as unknown as string), { instanceOf: TypeError, message: /file/ });
  await t.throwsAsync(readWeightsInfo(path.join(dir, 'nope.safetensors')), { code: 'ENOENT' });
  const notJson = path.join(dir, 'bad-config.safetensors');
  await writeFile(notJson, writeSafetensors({ x: Float32Array.of(1) }, { format: 'pt', emae_config: '{"depth":' }));
  await t.throwsAsync(readWeightsInfo(notJson), { instanceOf: RangeError, message: /emae_config/ });
  const badConfig = path.join(dir, 'bad-key.safetensors');
  await writeFile(badConfig, writeSafetensors({ x: Float32Array.of(1) }, { format: 'pt', emae_config: JSON.stringify({ ...recorded, patchSize: 3 }) }));
  await t.throwsAsync(readWeightsInfo(badConfig), { instanceOf: RangeError, message: /emae_config.*patchSize/ });
});

// The training loop: MAE's schedule, checkpoints (round trip, corruption refused, atomic), exact
// resume, and the stop on a non-finite loss.
import test from 'ava';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EMAE, Trainer, loadCheckpoint, lrAt, saveCheckpoint, scaledLr, type EMAEConfig } from '../lib/index.js';
import { gratings } from './helpers/synthetic.js';

const config: EMAEConfig = {
  imageSize: 16, patchSize: 4, channels: 3, embedDim: 32, depth: 2, numHeads: 2, decoderEmbedDim: 32,
  decoderDepth: 1, decoderNumHeads: 2, mlpRatio: 2, maskRatio: 0.75, device: 'cpu', threads: 2, seed: 1,
};
const data = { images: gratings(40, 3, 16, 3), count: 40 };
const tmp = () => mkdtempSync(path.join(tmpdir(), 'emae-trainer-'));

test('schedule: lr = blr·batch/256, linear warm-up from 0, half-cycle cosine to minLr', (t) => {
  t.is(scaledLr(1.5e-4, 4096), 2.4e-3);
  const s = { baseLr: 1, warmupSteps: 10, totalSteps: 110, minLr: 0.1 };
  t.is(lrAt(0, s), 0);
  t.is(lrAt(5, s), 0.5);
  t.is(lrAt(10, s), 1);
  t.true(Math.abs(lrAt(60, s) - 0.55) < 1e-12, 'half way down the cosine: (1 + 0.1) / 2');
  t.true(Math.abs(lrAt(110, s) - 0.1) < 1e-12);
  t.throws(() => lrAt(0, { baseLr: 1, warmupSteps: -1, totalSteps: 5 }), { instanceOf: RangeError, message: /warmupSteps/ });
});

test('a checkpoint round-trips weights, optimizer state and trainer state', async (t) => {
  const dir = tmp();
  const model = await EMAE.create(config);
  const trainer = new Trainer(model, data, { batchSize: 8, steps: 3, outDir: dir, blr: 1e-2 });
  await trainer.run();
  const file = path.join(dir, 'ckpt-3.safetensors');
  t.true(existsSync(file));
  t.is(readFileSync(path.join(dir, 'log.jsonl'), 'utf8').trim().split('\n').length, 3);
  const copy = await EMAE.create({ ...config, seed: 99 });
  const state = await loadCheckpoint(file, copy);
  t.is(state.step, 3);
  t.deepEqual(await copy.stateDict(), await model.stateDict());
  t.deepEqual(await copy.getOptimizerState(), await model.getOptimizerState());
  await model.dispose();
  await copy.dispose();
});

test('a corrupted or truncated checkpoint is refused and the model is unchanged', async (t) => {
  const dir = tmp();
  const model = await EMAE.create(config);
  const file = path.join(dir, 'ckpt.safetensors');
  await saveCheckpoint(file, model, { step: 0 });
  const bytes = readFileSync(file);
  const target = await EMAE.create({ ...config, seed: 5 });
  const before = await target.stateDict();
  const flipped = Buffer.from(bytes);
  flipped[flipped.length - 3] ^= 0x40;  // a bit in the last tensor's data
  writeFileSync(path.join(dir, 'flipped.safetensors'), flipped);
  await t.throwsAsync(loadCheckpoint(path.join(dir, 'flipped.safetensors'), target), { message: /checksum/ });
  writeFileSync(path.join(dir, 'short.safetensors'), bytes.subarray(0, bytes.length - 100));
  await t.throwsAsync(loadCheckpoint(path.join(dir, 'short.safetensors'), target), { message: /not a readable checkpoint/ });
  await model.saveWeights(path.join(dir, 'weights.safetensors'));
  await t.throwsAsync(loadCheckpoint(path.join(dir, 'weights.safetensors'), target), { message: /not an emae checkpoint/ });
  t.deepEqual(await target.stateDict(), before);
  await model.dispose();
  await target.dispose();
});

test('a failed checkpoint write leaves the previous checkpoint loadable', async (t) => {
  const dir = tmp();
  const model = await EMAE.create(config);
  const file = path.join(dir, 'ckpt.safetensors');
  await saveCheckpoint(file, model, { step: 1 });
  // a crash mid-write leaves at most a temporary file; the target is only ever renamed over
  writeFileSync(`${file}.tmp-crashed`, Buffer.alloc(100));
  await t.throwsAsync(saveCheckpoint(path.join(dir, 'missing-dir', 'x.safetensors'), model, { step: 2 }));
  const state = await loadCheckpoint(file, model);
  t.is(state.step, 1);
  await model.dispose();
});

test('resume continues bitwise: 4 + 4 steps give the losses of 8 uninterrupted steps', async (t) => {
  const options = { batchSize: 8, steps: 8, blr: 1e-2, warmupSteps: 2, clipGrad: 1, seed: 7, consistencyStart: 3 };
  const straight: number[] = [];
  const m1 = await EMAE.create(config);
  await new Trainer(m1, data, { ...options, onStep: (s) => { straight.push(s.loss); } }).run();

  const dir = tmp();
  const resumed: number[] = [];
  const m2 = await EMAE.create(config);
  await new Trainer(m2, data, { ...options, steps: 8, outDir: dir, checkpointEvery: 4, keepLast: 1,
    onStep: (s) => { resumed.push(s.loss); if (s.step === 4) throw new Error('interrupted'); } }).run().catch(() => {});
  t.deepEqual(readdirSync(dir).filter((f) => f.startsWith('ckpt-')), ['ckpt-4.safetensors']);
  const m3 = await EMAE.create({ ...config, seed: 12345 });  // different init: everything must come from the checkpoint
  const trainer = new Trainer(m3, data, { ...options, outDir: dir, onStep: (s) => { resumed.push(s.loss); } });
  await trainer.resume();
  t.is(trainer.step, 4);
  await trainer.run();
  t.deepEqual(resumed, straight);
  t.deepEqual(await m3.stateDict(), await m1.stateDict());
  for (const m of [m1, m2, m3]) await m.dispose();
});

test('a run resumed past its steps trains nothing and changes nothing', async (t) => {
  const dir = tmp();
  const m1 = await EMAE.create(config);
  await new Trainer(m1, data, { batchSize: 8, steps: 3, blr: 1e-2, outDir: dir }).run();
  const m2 = await EMAE.create({ ...config, seed: 99 });
  const steps: number[] = [];
  const trainer = new Trainer(m2, data, { batchSize: 8, steps: 2, blr: 1e-2, outDir: dir, onStep: (s) => { steps.push(s.step); } });
  await trainer.resume();
  await trainer.run();  // the queue of batches is empty, never negative
  t.deepEqual(steps, []);
  t.is(trainer.step, 3);
  t.deepEqual(await m2.stateDict(), await m1.stateDict());
  for (const m of [m1, m2]) await m.dispose();
});

test('a non-finite loss stops training, names the step and keeps the last good checkpoint', async (t) => {
  const dir = tmp();
  const images = Float32Array.from(data.images);
  const model = await EMAE.create(config);
  const trainer = new Trainer(model, { images, count: 40 }, { batchSize: 40, steps: 5, outDir: dir, checkpointEvery: 1,
    onStep: (s) => { if (s.step === 2) images[7] = NaN; } });
  const err = await t.throwsAsync(trainer.run(), { message: /training stopped at step 3/ });
  t.is((err as any).code, 'EMAE_NONFINITE_LOSS');
  t.regex(err!.message, /ckpt-2\.safetensors/);
  const state = await loadCheckpoint(path.join(dir, 'ckpt-2.safetensors'), model);
  t.is(state.step, 2);
  await model.dispose();
});

test('bad trainer options are clear errors', async (t) => {
  const model = await EMAE.create(config);
  t.throws(() => new Trainer(model, data, { batchSize: 0, steps: 1 }), { instanceOf: RangeError, message: /batchSize/ });
  t.throws(() => new Trainer(model, data, { batchSize: 41, steps: 1 }), { instanceOf: RangeError, message: /batchSize/ });
  t.throws(() => new Trainer(model, { images: new Float32Array(5), count: 40 }, { batchSize: 4, steps: 1 }), { instanceOf: RangeError, message: /count/ });
  t.throws(() => new Trainer(model, { images: [] as any, count: 1 }, { batchSize: 1, steps: 1 }), { instanceOf: TypeError });
  await t.throwsAsync(new Trainer(model, data, { batchSize: 4, steps: 1 }).resume(), { message: /no checkpoint/ });
  await model.dispose();
});

test('gradient accumulation: two micro-batches of 4 give the step of one batch of 8', async (t) => {
  const a = await EMAE.create(config), b = await EMAE.create(config);
  const per = 3 * 16 * 16;
  const images = data.images.slice(0, 8 * per);
  const { ParallelMasker } = await import('../lib/index.js');
  const permutation = ParallelMasker.fromConfig(a.config, 3).next(8);
  const N = a.config.numPatches;
  const full = await a.trainStep({ images, permutation, batchSize: 8 }, { lr: 1e-3, clipGrad: 0 });
  const m1 = await b.accumulateGradients({ images: images.slice(0, 4 * per), permutation: permutation.slice(0, 4 * N), batchSize: 4 }, { reset: true });
  const m2 = await b.accumulateGradients({ images: images.slice(4 * per), permutation: permutation.slice(4 * N), batchSize: 4 });
  const applied = await b.applyGradients({ lr: 1e-3, gradScale: 0.5 });
  t.true(Math.abs((m1.recon + m2.recon) / 2 - full.recon) < 1e-6 * full.recon, 'equal-size micro-batches: the mean of the losses');
  t.true(Math.abs(applied.gradNorm - full.gradNorm) < 1e-4 * full.gradNorm);
  t.is(applied.step, 1);
  const [sa, sb] = [await a.stateDict(), await b.stateDict()];
  for (const name of Object.keys(sa)) {
    if (name.endsWith('attn.qkv.bias')) {
      // its key third has an exactly-zero true gradient, so AdamW's first step there is lr·sign(round-off)
      t.true(sa[name].every((v, i) => Math.abs(v - sb[name][i]) <= 2.01e-3), name);
      continue;
    }
    let num = 0, den = 0;
    for (let i = 0; i < sa[name].length; i++) { num += (sa[name][i] - sb[name][i]) ** 2; den += sa[name][i] ** 2; }
    t.true(Math.sqrt(num / Math.max(den, 1e-30)) < 1e-5, name);
  }
  await t.throwsAsync(b.applyGradients({ lr: 1e-3, gradScale: 0 }), { instanceOf: RangeError, message: /gradScale/ });
  await t.throwsAsync(b.accumulateGradients({ images, permutation, batchSize: 8 }, { reset: 'yes' as any }), { instanceOf: TypeError, message: /reset/ });
  await a.dispose();
  await b.dispose();
});

test('the trainer accumulates micro-batches, counts epochs, and resumes bitwise with accumulation', async (t) => {
  const epochs: number[] = [];
  const options = { batchSize: 4, accumulate: 2, epochs: 2, blr: 1e-2, seed: 3 };  // 40 images → 5 steps per epoch
  const straight: number[] = [];
  const m1 = await EMAE.create(config);
  await new Trainer(m1, data, { ...options, onStep: (s) => { straight.push(s.loss); }, onEpoch: (e) => { epochs.push(e); } }).run();
  t.is(straight.length, 10);
  t.deepEqual(epochs, [0]);  // epoch 0 completes when epoch 1's first batch is taken
  const dir = tmp();
  const resumed: number[] = [];
  const m2 = await EMAE.create(config);
  await new Trainer(m2, data, { ...options, outDir: dir, checkpointEvery: 3,
    onStep: (s) => { resumed.push(s.loss); if (s.step === 3) throw new Error('stop'); } }).run().catch(() => {});
  const m3 = await EMAE.create(config);
  const trainer = new Trainer(m3, data, { ...options, outDir: dir, onStep: (s) => { resumed.push(s.loss); } });
  await trainer.resume();
  await trainer.run();
  t.deepEqual(resumed, straight);
  t.throws(() => new Trainer(m3, data, { batchSize: 4, steps: 2, epochs: 1 }), { instanceOf: RangeError, message: /steps\/epochs/ });
  for (const m of [m1, m2, m3]) await m.dispose();
});

// ---- the run folder: one run per folder, nothing of another run touched (issue 15) ----

const files = (dir: string) => readdirSync(dir).sort();

test('a new run refuses a non-empty outDir and changes nothing; overwrite starts over', async (t) => {
  const dir = tmp();
  const model = await EMAE.create(config);
  await new Trainer(model, data, { batchSize: 8, steps: 6, outDir: dir, checkpointEvery: 2, blr: 1e-2 }).run();
  const before = files(dir);
  t.deepEqual(before.filter((f) => f.startsWith('ckpt-')), ['ckpt-2.safetensors', 'ckpt-4.safetensors', 'ckpt-6.safetensors']);
  const log = readFileSync(path.join(dir, 'log.jsonl'));
  const second = new Trainer(model, data, { batchSize: 8, steps: 3, outDir: dir, checkpointEvery: 1, blr: 1e-2 });
  const err = await t.throwsAsync(second.run(), { message: /is not empty .*ckpt-2\.safetensors.*resume.*--force/s });
  t.is((err as any).code, 'EMAE_OUT_NOT_EMPTY');
  t.is(second.step, 0, 'no step was taken');
  t.deepEqual(files(dir), before);
  t.deepEqual(readFileSync(path.join(dir, 'log.jsonl')), log);
  // an unrelated file also makes the folder non-empty, and overwrite leaves it alone
  writeFileSync(path.join(dir, 'notes.txt'), 'mine');
  const fresh = new Trainer(model, data, { batchSize: 8, steps: 3, outDir: dir, checkpointEvery: 1, keepLast: 5, blr: 1e-2, overwrite: true });
  t.deepEqual((await fresh.prepareOutDir()).removed, ['ckpt-2.safetensors', 'ckpt-4.safetensors', 'ckpt-6.safetensors', 'log.jsonl']);
  await fresh.run();
  t.deepEqual(files(dir), ['ckpt-1.safetensors', 'ckpt-2.safetensors', 'ckpt-3.safetensors', 'log.jsonl', 'notes.txt']);
  t.deepEqual(readFileSync(path.join(dir, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step), [1, 2, 3]);
  t.throws(() => new Trainer(model, data, { batchSize: 8, steps: 1, overwrite: 'yes' as any }), { instanceOf: TypeError, message: /overwrite/ });
  await model.dispose();
});

test('an outDir that is a file is refused with a sentence', async (t) => {
  const dir = tmp();
  const model = await EMAE.create(config);
  writeFileSync(path.join(dir, 'taken'), 'x');
  await t.throwsAsync(new Trainer(model, data, { batchSize: 8, steps: 1, outDir: path.join(dir, 'taken') }).run(),
    { message: /cannot use .*taken as the output folder: a file of that name exists and is not a folder/ });
  await t.throwsAsync(new Trainer(model, data, { batchSize: 8, steps: 1, outDir: path.join(dir, 'taken', 'sub') }).run(),
    { message: /cannot use .*sub as the output folder: a file of that name \(or above it\) is not a folder/ });
  await model.dispose();
});

test('pruning removes only the current run\'s checkpoints', async (t) => {
  const other = tmp(), dir = tmp();
  const model = await EMAE.create(config);
  await new Trainer(model, data, { batchSize: 8, steps: 1, outDir: other, blr: 1e-2 }).run();
  const a = await EMAE.create(config);
  await new Trainer(a, data, { batchSize: 8, steps: 4, outDir: dir, checkpointEvery: 2, blr: 1e-2 }).run();
  // another run's checkpoint with a higher step lands in the folder
  writeFileSync(path.join(dir, 'ckpt-100.safetensors'), readFileSync(path.join(other, 'ckpt-1.safetensors')));
  const resumed = new Trainer(a, data, { batchSize: 8, steps: 8, outDir: dir, checkpointEvery: 2, keepLast: 2, blr: 1e-2 });
  await resumed.resume(path.join(dir, 'ckpt-4.safetensors'));
  await resumed.run();
  t.deepEqual(files(dir).filter((f) => f.startsWith('ckpt-')), ['ckpt-100.safetensors', 'ckpt-6.safetensors', 'ckpt-8.safetensors']);
  await model.dispose();
  await a.dispose();
});

test('a failed checkpoint write names the last good checkpoint; resume cuts the log back to it', async (t) => {
  const dir = tmp();
  const options = { batchSize: 8, steps: 6, blr: 1e-2, seed: 2, checkpointEvery: 2 };
  const straight: number[] = [];
  const m1 = await EMAE.create(config);
  await new Trainer(m1, data, { ...options, onStep: (s) => { straight.push(s.loss); } }).run();
  const m2 = await EMAE.create(config);
  const blocker = path.join(dir, 'ckpt-4.safetensors');
  const first = new Trainer(m2, data, { ...options, outDir: dir, onStep: (s) => {
    // a non-empty folder where the step-4 checkpoint goes: its rename fails like a full disk would
    if (s.step === 2) { mkdirSync(blocker); writeFileSync(path.join(blocker, 'x'), 'x'); }
  } });
  const err = await t.throwsAsync(first.run(), { message: /training stopped at step 4: could not write the checkpoint of step 4 .*the last good checkpoint is .*ckpt-2\.safetensors/ });
  t.truthy(err);
  t.deepEqual(readFileSync(path.join(dir, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step), [1, 2, 3, 4]);
  rmSync(blocker, { recursive: true });
  const m3 = await EMAE.create(config);
  const losses: number[] = [];
  const second = new Trainer(m3, data, { ...options, outDir: dir, onStep: (s) => { losses.push(s.loss); } });
  await second.resume();
  t.is(second.step, 2);
  t.deepEqual(await second.prepareOutDir(), { removed: [], logLinesDropped: 2 });
  await second.run();
  const log = readFileSync(path.join(dir, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.deepEqual(log.map((l) => l.step), [1, 2, 3, 4, 5, 6], 'no step logged twice');
  t.deepEqual(log.map((l) => l.loss), straight, 'the log holds the losses of one uninterrupted run');
  t.deepEqual(losses, straight.slice(2));
  for (const m of [m1, m2, m3]) await m.dispose();
});

test('absurd learning rates are RangeErrors and change nothing', async (t) => {
  const model = await EMAE.create(config);
  const before = await model.stateDict();
  const per = 3 * 16 * 16;
  const { ParallelMasker } = await import('../lib/index.js');
  const batch = { images: data.images.slice(0, 2 * per), permutation: ParallelMasker.fromConfig(model.config, 0).next(2), batchSize: 2 };
  await t.throwsAsync(model.trainStep(batch, { lr: 1e30 }), { instanceOf: RangeError, message: /learning rate in \[0, 1\].* for lr but received 1e\+30/ });
  await t.throwsAsync(model.applyGradients({ lr: 2 }), { instanceOf: RangeError, message: /lr/ });
  t.deepEqual(await model.stateDict(), before);
  t.throws(() => new Trainer(model, data, { batchSize: 8, steps: 1, blr: 1e30 }), { instanceOf: RangeError, message: /blr/ });
  t.throws(() => new Trainer(model, data, { batchSize: 8, steps: 1, blr: NaN }), { instanceOf: RangeError, message: /blr/ });
  t.throws(() => new Trainer(model, data, { batchSize: 8, steps: 1, blr: '1e-3' as any }), { instanceOf: TypeError, message: /blr/ });
  await model.dispose();
});

test('a checkpoint records the model config and the trainer options', async (t) => {
  const dir = tmp();
  const model = await EMAE.create(config);
  await new Trainer(model, data, { batchSize: 8, steps: 1, outDir: dir, blr: 1e-2, clipGrad: 0.5, accumulate: 1 }).run();
  const { readWeightsInfo } = await import('../lib/index.js');
  const info = await readWeightsInfo(path.join(dir, 'ckpt-1.safetensors'));
  t.is(info.kind, 'checkpoint');
  t.like(info.config, { imageSize: 16, depth: 2, embedDim: 32 });
  t.like(JSON.parse(info.metadata.trainer_options), { batchSize: 8, steps: 1, blr: 1e-2, clipGrad: 0.5, accumulate: 1, seed: 0 });
  await model.dispose();
});

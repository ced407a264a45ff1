// EMAE-level bad input (DESIGN §4): every bad argument is refused in TypeScript with the
// parameter named (TypeError for a wrong type, RangeError for a bad value or size), and nothing
// is lost: after a refused call the parameters and optimizer state are as before.
// Needs the built addon (`npm run build:native`).
import test from 'ava';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { EMAE, ParallelMasker, cudaInfo, readSafetensors, writeSafetensors, type EMAEConfig } from '../lib/index.js';
import { tempDir, unchanged } from './helpers/refusals.js';

const tiny: EMAEConfig = {
  imageSize: 8, patchSize: 2, channels: 3, embedDim: 16, depth: 1, numHeads: 2,
  decoderEmbedDim: 8, decoderDepth: 1, decoderNumHeads: 2, maskRatio: 0.75, device: 'cpu', threads: 1,
};
const N = 16; // (8/2)^2
const P = 12; // 2*2*3
const IMAGE = 3 * 8 * 8;

/** Deterministic images in [-1, 1) and permutations for a batch of B. */
function makeBatch(batchSize: number, seed = 1): { images: Float32Array; permutation: Int32Array; batchSize: number } {
  const images = new Float32Array(batchSize * IMAGE);
  let s = seed >>> 0;
  for (let i = 0; i < images.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    images[i] = s / 2 ** 31 - 1;
  }
  const permutation = new ParallelMasker({ numPatches: N, maskRatio: 0.75, seed }).next(batchSize);
  return { images, permutation, batchSize };
}

async function create(t: { teardown: (fn: () => void) => void }, extra: EMAEConfig = {}): Promise<EMAE> {
  const model = await EMAE.create({ ...tiny, ...extra });
  t.teardown(() => { void model.dispose(); });
  return model;
}

// ---- bad calls: create ------------------------------------------------------------------------

test('create: a bad config is refused with the key named', async (t) => {
  await t.throwsAsync(EMAE.create({ ...tiny, patchSize: 3 }), { instanceOf: RangeError, message: /patchSize/ });
  await t.throwsAsync(EMAE.create({ ...tiny, numHeads: '2' as unknown as number }), { instanceOf: TypeError, message: /numHeads/ });
  await t.throwsAsync(EMAE.create({ ...tiny, embed_dim: 16 } as EMAEConfig), { instanceOf: TypeError, message: /embed_dim/ });
  await t.throwsAsync(EMAE.create(undefined as unknown as EMAEConfig), { instanceOf: TypeError, message: /config/ });
});

test("create: device 'cuda' without a usable CUDA backend is a clear Error", async (t) => {
  const info = cudaInfo();
  const err = await t.throwsAsync(EMAE.create({ ...tiny, device: 'cuda' }));
  t.regex(err!.message, /device 'cuda'/);
  if (!info.compiled) t.regex(err!.message, /no CUDA backend/);
  else if (info.devices.length === 0) t.regex(err!.message, /no CUDA device/);
});

test('the constructor is private', (t) => {
  const Ctor = EMAE as unknown as new () => EMAE;
  t.throws(() => new Ctor(), { instanceOf: TypeError, message: /EMAE\.create/ });
});

// ---- bad calls: batches -----------------------------------------------------------------------

test('images: wrong typed-array kind or length', async (t) => {
  const model = await create(t);
  const good = makeBatch(2);
  await unchanged(t, model, async () => {
    for (const call of [
      (b: typeof good) => model.lossAndGrads(b),
      (b: typeof good) => model.trainStep(b, { lr: 1e-3 }),
    ]) {
      let e = await t.throwsAsync(call({ ...good, images: new Float64Array(good.images) as unknown as Float32Array }), { instanceOf: TypeError });
      t.regex(e!.message, /Expected Float32Array .* for images but received Float64Array\(384\)/);
      e = await t.throwsAsync(call({ ...good, images: Array.from(good.images) as unknown as Float32Array }), { instanceOf: TypeError });
      t.regex(e!.message, /images/);
      e = await t.throwsAsync(call({ ...good, images: good.images.subarray(1) }), { instanceOf: RangeError });
      t.regex(e!.message, /images of length .* = 384 but received length 383/);
      e = await t.throwsAsync(call({ ...good, images: undefined as unknown as Float32Array }), { instanceOf: TypeError });
      t.regex(e!.message, /images/);
    }
  });
});

test('permutation: wrong kind, wrong length, not a permutation', async (t) => {
  const model = await create(t);
  const good = makeBatch(2);
  await unchanged(t, model, async () => {
    for (const call of [
      (b: typeof good) => model.lossAndGrads(b),
      (b: typeof good) => model.trainStep(b, { lr: 1e-3 }),
    ]) {
      let e = await t.throwsAsync(call({ ...good, permutation: new Uint32Array(good.permutation) as unknown as Int32Array }), { instanceOf: TypeError });
      t.regex(e!.message, /Int32Array .* for permutation but received Uint32Array\(32\)/);
      e = await t.throwsAsync(call({ ...good, permutation: new Float32Array(32) as unknown as Int32Array }), { instanceOf: TypeError });
      t.regex(e!.message, /permutation/);
      e = await t.throwsAsync(call({ ...good, permutation: good.permutation.subarray(0, N) }), { instanceOf: RangeError });
      t.regex(e!.message, /permutation of length .*= 32 but received length 16/);
      const dup = good.permutation.slice();
      dup[N + 5] = dup[N + 6];
      e = await t.throwsAsync(call({ ...good, permutation: dup }), { instanceOf: RangeError });
      t.regex(e!.message, new RegExp(`permutation row 1 is not a permutation of 0\\.\\.15: ${dup[N + 6]} appears twice`));
      const out = good.permutation.slice();
      out[3] = N;
      e = await t.throwsAsync(call({ ...good, permutation: out }), { instanceOf: RangeError });
      t.regex(e!.message, /permutation row 0 .*16 .*out of range/);
    }
  });
});

test('batchSize: not a positive integer, or not matching the arrays', async (t) => {
  const model = await create(t);
  const good = makeBatch(2);
  await unchanged(t, model, async () => {
    for (const bad of [0, -1, 1.5, Number.NaN, Infinity]) {
      await t.throwsAsync(model.lossAndGrads({ ...good, batchSize: bad }), { instanceOf: RangeError, message: /batchSize/ });
    }
    await t.throwsAsync(model.lossAndGrads({ ...good, batchSize: '2' as unknown as number }), { instanceOf: TypeError, message: /batchSize/ });
    await t.throwsAsync(model.trainStep({ ...good, batchSize: undefined as unknown as number }, { lr: 1 }), { instanceOf: TypeError, message: /batchSize/ });
    await t.throwsAsync(model.lossAndGrads({ ...good, batchSize: 3 }), { instanceOf: RangeError, message: /= 3·3·8·8 = 576 but received length 384/ });
    await t.throwsAsync(model.lossAndGrads({ ...good, batchSize: 1 }), { instanceOf: RangeError, message: /images/ });
    await t.throwsAsync(model.lossAndGrads(null as unknown as typeof good), { instanceOf: TypeError, message: /batch/ });
  });
});

// ---- bad calls: options -----------------------------------------------------------------------

test('trainStep options: each bad value names its option', async (t) => {
  const model = await create(t);
  const batch = makeBatch(2);
  const cases: Array<[Record<string, unknown>, typeof TypeError | typeof RangeError, RegExp]> = [
    [{}, TypeError, /lr/],
    [{ lr: '1e-3' }, TypeError, /lr/],
    [{ lr: -1 }, RangeError, /Expected learning rate in \[0, 1\].* for lr but received -1/],
    [{ lr: Number.NaN }, RangeError, /lr/],
    [{ lr: Infinity }, RangeError, /lr/],
    [{ lr: 1e-3, weightDecay: -0.1 }, RangeError, /weightDecay/],
    [{ lr: 1e-3, weightDecay: Infinity }, RangeError, /weightDecay/],
    [{ lr: 1e-3, beta1: 1 }, RangeError, /beta1/],
    [{ lr: 1e-3, beta1: -0.1 }, RangeError, /beta1/],
    [{ lr: 1e-3, beta2: 1.5 }, RangeError, /beta2/],
    [{ lr: 1e-3, eps: 0 }, RangeError, /eps/],
    [{ lr: 1e-3, clipGrad: -1 }, RangeError, /clipGrad/],
    [{ lr: 1e-3, consistencyWeight: -1 }, RangeError, /consistencyWeight/],
    [{ lr: 1e-3, consistencyWeight: 'x' }, TypeError, /consistencyWeight/],
    [{ lr: 1e-3, weight_decay: 0.1 }, TypeError, /"weight_decay".*"weightDecay"/],
  ];
  await unchanged(t, model, async () => {
    for (const [options, cls, re] of cases) {
      const err = await t.throwsAsync(model.trainStep(batch, options as never), { instanceOf: cls }, JSON.stringify(options));
      t.regex(err!.message, re);
    }
    await t.throwsAsync(model.trainStep(batch, undefined as never), { instanceOf: TypeError, message: /options/ });
  });
});

test('lossAndGrads options', async (t) => {
  const model = await create(t);
  const batch = makeBatch(1);
  await t.throwsAsync(model.lossAndGrads(batch, { consistencyWeight: -2 }), { instanceOf: RangeError, message: /consistencyWeight/ });
  await t.throwsAsync(model.lossAndGrads(batch, { lr: 1 } as never), { instanceOf: TypeError, message: /"lr"/ });
});

// ---- bad calls: weights -----------------------------------------------------------------------

test('weights file with a missing tensor: error names it, model unchanged', async (t) => {
  const model = await create(t);
  const dir = await tempDir(t, 'emae-api-');
  const file = path.join(dir, 'missing.safetensors');
  await model.saveWeights(file);
  const { tensors } = readSafetensors(await readFile(file));
  delete tensors['blocks.0.attn.qkv.weight'];
  await writeFile(file, writeSafetensors(tensors, { format: 'pt' }));
  const other = await create(t, { seed: 99 });
  await unchanged(t, other, async () => {
    const err = await t.throwsAsync(other.loadWeights(file), { instanceOf: RangeError });
    t.regex(err!.message, /blocks\.0\.attn\.qkv\.weight: missing from the file \(expected shape \[48,16\]\)/);
    t.true(err!.message.includes(file));
  });
});

test('weights file with a mis-shaped tensor: error names it with both shapes, model unchanged', async (t) => {
  const model = await create(t);
  const dir = await tempDir(t, 'emae-api-');
  const file = path.join(dir, 'misshaped.safetensors');
  const state = await model.stateDict();
  const info = model.paramInfo();
  const tensors: Record<string, { data: Float32Array; shape: number[] }> = {};
  for (const p of info) tensors[p.name] = { data: state[p.name], shape: p.shape };
  t.deepEqual(tensors['decoder_pred.weight'].shape, [P, 8]);
  tensors['decoder_pred.weight'] = { data: new Float32Array(P * 9), shape: [P, 9] };
  await writeFile(file, writeSafetensors(tensors, { format: 'pt' }));
  await unchanged(t, model, async () => {
    const err = await t.throwsAsync(model.loadWeights(file), { instanceOf: RangeError });
    t.regex(err!.message, /decoder_pred\.weight: expected shape \[12,8\] but the file has \[12,9\]/);
  });
  // same element count, other shape: still refused
  tensors['decoder_pred.weight'] = { data: new Float32Array(P * 8), shape: [8, P] };
  await writeFile(file, writeSafetensors(tensors));
  await unchanged(t, model, async () => {
    await t.throwsAsync(model.loadWeights(file), { instanceOf: RangeError, message: /decoder_pred\.weight: expected shape \[12,8\] but the file has \[8,12\]/ });
  });
});

test('weights file with a non-F32 tensor, an unexpected tensor, or corrupt bytes', async (t) => {
  const model = await create(t);
  const dir = await tempDir(t, 'emae-api-');
  const file = path.join(dir, 'w.safetensors');
  const state = await model.stateDict();
  const shapes = Object.fromEntries(model.paramInfo().map((p) => [p.name, p.shape]));
  const withShapes = (dict: Record<string, Float32Array | Float64Array>) =>
    Object.fromEntries(Object.entries(dict).map(([k, v]) => [k, { data: v, shape: shapes[k] ?? [v.length] }]));
  await unchanged(t, model, async () => {
    await writeFile(file, writeSafetensors(withShapes({ ...state, 'norm.weight': Float64Array.from(state['norm.weight']) })));
    let err = await t.throwsAsync(model.loadWeights(file), { instanceOf: TypeError });
    t.regex(err!.message, /norm\.weight: expected dtype F32 but the file has F64/);

    await writeFile(file, writeSafetensors(withShapes({ ...state, 'head.weight': new Float32Array(4) })));
    err = await t.throwsAsync(model.loadWeights(file), { instanceOf: RangeError });
    t.regex(err!.message, /head\.weight: unexpected tensor/);

    const good = writeSafetensors(withShapes(state));
    await writeFile(file, good.subarray(0, good.length - 3));
    err = await t.throwsAsync(model.loadWeights(file), { instanceOf: RangeError });
    t.regex(err!.message, /invalid safetensors data/);
    t.true(err!.message.startsWith(file));

    await t.throwsAsync(model.loadWeights(path.join(dir, 'nope.safetensors')), { code: 'ENOENT' });
    await t.throwsAsync(model.loadWeights(42 as unknown as string), { instanceOf: TypeError, message: /file/ });
    await t.throwsAsync(model.loadWeights(file, { strict: 'no' } as never), { instanceOf: TypeError, message: /strict/ });
  });
  // an unexpected tensor is ignored with strict: false
  await writeFile(file, writeSafetensors(withShapes({ ...state, 'head.weight': new Float32Array(4) })));
  await model.loadWeights(file, { strict: false });
  t.deepEqual(await model.stateDict(), state);
});

test('loadStateDict: wrong kind, wrong length, missing (strict and not)', async (t) => {
  const model = await create(t);
  const state = await model.stateDict();
  await unchanged(t, model, async () => {
    let err = await t.throwsAsync(model.loadStateDict({ ...state, cls_token: new Float64Array(16) as unknown as Float32Array }), { instanceOf: TypeError });
    t.regex(err!.message, /Expected Float32Array for cls_token but received Float64Array\(16\)/);
    err = await t.throwsAsync(model.loadStateDict({ ...state, cls_token: new Float32Array(15) }), { instanceOf: RangeError });
    t.regex(err!.message, /cls_token: expected 16 elements \(shape \[1,1,16\]\) but received Float32Array\(15\)/);
    const { mask_token: _, ...missing } = state;
    err = await t.throwsAsync(model.loadStateDict(missing), { instanceOf: RangeError });
    t.regex(err!.message, /mask_token: missing/);
    await t.throwsAsync(model.loadStateDict(null as never), { instanceOf: TypeError, message: /state dict/ });
  });
  // strict: false keeps the missing ones
  const other = await create(t, { seed: 5 });
  const otherState = await other.stateDict();
  const { mask_token: __, ...partial } = otherState;
  await model.loadStateDict(partial, { strict: false });
  const after = await model.stateDict();
  t.deepEqual(after.mask_token, state.mask_token);
  t.deepEqual(after['decoder_pred.weight'], otherState['decoder_pred.weight']);
});

test('setOptimizerState: bad state refused, optimizer unchanged', async (t) => {
  const model = await create(t);
  await model.trainStep(makeBatch(2), { lr: 1e-3 });
  const state = await model.getOptimizerState();
  const name = Object.keys(state.expAvg)[0];
  await unchanged(t, model, async () => {
    await t.throwsAsync(model.setOptimizerState({ ...state, step: -1 }), { instanceOf: RangeError, message: /step/ });
    await t.throwsAsync(model.setOptimizerState({ ...state, step: '1' as never }), { instanceOf: TypeError, message: /step/ });
    await t.throwsAsync(model.setOptimizerState({ ...state, expAvg: { ...state.expAvg, [name]: new Float32Array(1) } }), { instanceOf: RangeError, message: new RegExp(`expAvg\\.${name.replace(/\./g, '\\.')}`) });
    await t.throwsAsync(model.setOptimizerState({ ...state, expAvgSq: { ...state.expAvgSq, [name]: [] as never } }), { instanceOf: TypeError, message: /expAvgSq/ });
    await t.throwsAsync(model.setOptimizerState({ ...state, expAvg: { ...state.expAvg, pos_embed: new Float32Array(1) } }), { instanceOf: RangeError, message: /pos_embed/ });
  });
  await model.setOptimizerState(state);
  t.deepEqual(await model.getOptimizerState(), state);
});

// ---- disposal ---------------------------------------------------------------------------------

test('every method refuses a disposed model', async (t) => {
  const model = await EMAE.create(tiny);
  const batch = makeBatch(1);
  await model.dispose();
  t.true(model.disposed);
  const message = 'EMAE model has been disposed';
  t.throws(() => model.paramInfo(), { message });
  await t.throwsAsync(model.stateDict(), { message });
  await t.throwsAsync(model.lossAndGrads(batch), { message });
  await t.throwsAsync(model.trainStep(batch, { lr: 1 }), { message });
  await t.throwsAsync(model.loadStateDict({}), { message });
  await t.throwsAsync(model.loadWeights('x'), { message });
  await t.throwsAsync(model.saveWeights('x'), { message });
  await t.throwsAsync(model.getOptimizerState(), { message });
  await t.throwsAsync(model.setOptimizerState({ step: 0, expAvg: {}, expAvgSq: {} }), { message });
  await t.notThrowsAsync(model.dispose());
  t.is(model.config.imageSize, 8);
});

test('calls already queued when dispose() is called finish; later ones are refused', async (t) => {
  const model = await EMAE.create(tiny);
  const batch = makeBatch(2);
  const running = model.lossAndGrads(batch);
  const disposing = model.dispose();
  await t.throwsAsync(model.stateDict(), { message: /disposed/ });
  const r = await running;
  t.true(Number.isFinite(r.loss));
  await disposing;
});

// ---- normal cases -----------------------------------------------------------------------------

test('results have exactly the DESIGN §3 shape', async (t) => {
  const model = await create(t);
  const batch = makeBatch(2);
  const r = await model.lossAndGrads(batch);
  t.deepEqual(Object.keys(r).sort(), ['consistency', 'grads', 'loss', 'recon']);
  for (const k of ['loss', 'recon', 'consistency'] as const) t.true(Number.isFinite(r[k]), k);
  t.true(Math.abs(r.loss - (r.recon + r.consistency)) <= 1e-5 * Math.max(1, Math.abs(r.loss)));
  const trainable = model.paramInfo().filter((p) => p.trainable);
  t.deepEqual(Object.keys(r.grads).sort(), trainable.map((p) => p.name).sort());
  for (const p of trainable) {
    t.true(r.grads[p.name] instanceof Float32Array);
    t.is(r.grads[p.name].length, p.shape.reduce((a, b) => a * b, 1), p.name);
  }
  const s1 = await model.trainStep(batch, { lr: 1e-3 });
  t.deepEqual(Object.keys(s1).sort(), ['consistency', 'gradNorm', 'loss', 'recon', 'step']);
  t.is(s1.step, 1);
  t.is(s1.loss, r.loss);
  const s2 = await model.trainStep(batch, { lr: 1e-3, weightDecay: 0, clipGrad: 1, consistencyWeight: 0 });
  t.is(s2.step, 2);
  t.is(s2.loss, s2.recon);
});

test('config, device and paramInfo', async (t) => {
  const model = await create(t);
  t.is(model.device, 'cpu');
  t.like(model.config, { numPatches: N, patchDim: P, partsTotal: 4, visiblePerPart: 4, parts: 4, device: 'cpu', threads: 1 });
  t.true(Object.isFrozen(model.config));
  const info = model.paramInfo();
  const names = info.map((p) => p.name);
  for (const n of ['patch_embed.proj.weight', 'cls_token', 'pos_embed', 'blocks.0.attn.qkv.weight', 'norm.weight',
    'decoder_embed.weight', 'mask_token', 'decoder_pos_embed', 'decoder_norm.bias', 'decoder_pred.weight']) {
    t.true(names.includes(n), n);
  }
  t.false(info.find((p) => p.name === 'pos_embed')!.trainable);
  info[0].shape[0] = -1;
  t.not(model.paramInfo()[0].shape[0], -1);
  const auto = await EMAE.create({ ...tiny, device: 'auto', threads: undefined });
  t.is(auto.device, 'cpu');
  t.true(Number.isInteger(auto.config.threads) && auto.config.threads! >= 1);
  await auto.dispose();
});

test('saveWeights/loadWeights round trip, readable as safetensors with metadata format pt (and the config, a checksum)', async (t) => {
  const model = await create(t);
  await model.trainStep(makeBatch(2), { lr: 1e-2 });
  const dir = await tempDir(t, 'emae-api-');
  const file = path.join(dir, 'model.safetensors');
  await model.saveWeights(file);
  t.deepEqual(await readdir(dir), ['model.safetensors']);
  const { tensors, metadata } = readSafetensors(await readFile(file));
  t.deepEqual(Object.keys(metadata).sort(), ['emae_config', 'format', 'sha256']);
  t.is(metadata.format, 'pt');
  for (const p of model.paramInfo()) t.like(tensors[p.name], { dtype: 'F32', shape: p.shape }, p.name);
  const other = await create(t, { seed: 3 });
  t.notDeepEqual(await other.stateDict(), await model.stateDict());
  await other.loadWeights(file);
  t.deepEqual(await other.stateDict(), await model.stateDict());
  // saving into a missing directory fails and leaves nothing behind
  await t.throwsAsync(model.saveWeights(path.join(dir, 'missing', 'x.safetensors')), { code: 'ENOENT' });
  t.deepEqual(await readdir(dir), ['model.safetensors']);
});

test('calls are serialized, and a batch is read at call time', async (t) => {
  const a = await create(t, { seed: 11 });
  const b = await create(t, { seed: 11 });
  const batch = makeBatch(2, 7);
  const opts = { lr: 1e-2 };
  // a: three calls in flight at once, the caller reusing its buffers right away
  const images = batch.images.slice();
  const permutation = batch.permutation.slice();
  const p1 = a.lossAndGrads({ images, permutation, batchSize: 2 });
  const p2 = a.trainStep({ images, permutation, batchSize: 2 }, opts);
  const p3 = a.lossAndGrads({ images, permutation, batchSize: 2 });
  images.fill(0);
  permutation.set(new ParallelMasker({ numPatches: N, seed: 99 }).next(2));
  const [r1, s, r3] = await Promise.all([p1, p2, p3]);
  // b: the same calls one after another
  const q1 = await b.lossAndGrads(batch);
  const t2 = await b.trainStep(batch, opts);
  const q3 = await b.lossAndGrads(batch);
  t.is(r1.loss, q1.loss);
  t.is(s.loss, t2.loss);
  t.is(r3.loss, q3.loss);
  t.not(r3.loss, r1.loss);
  t.deepEqual(await a.stateDict(), await b.stateDict());
});

test('a non-finite loss rejects with the caller stack and changes nothing', async (t) => {
  const model = await create(t);
  const batch = makeBatch(2);
  batch.images[5] = Number.NaN;
  await unchanged(t, model, async () => {
    const err = await t.throwsAsync(model.trainStep(batch, { lr: 1e-3 }));
    t.regex(err!.stack ?? '', /api-errors\.test\.ts/);
  });
});

// The optimizer decides from the step status where the gradients are and the host reads it once,
// after the update (core/optimizer_step.cc): a refused step must still say why, with the code, and
// leave the step counter, parameters and moments as they were — and training goes on after it.
test('trainStep: a non-finite loss is EMAE_NONFINITE_LOSS naming the losses; the step counter stays', async (t) => {
  const model = await create(t);
  const good = makeBatch(2, 3);
  t.is((await model.trainStep(good, { lr: 1e-3, clipGrad: 0.5 })).step, 1);
  const batch = makeBatch(2);
  batch.images[7] = Number.NaN;
  await unchanged(t, model, async () => {
    const err = await t.throwsAsync(model.trainStep(batch, { lr: 1e-3, clipGrad: 0.5 }));
    t.is((err as Error & { code?: string }).code, 'EMAE_NONFINITE_LOSS');
    t.regex(err!.message, /^trainStep: the loss is not finite \(loss NaN, recon NaN, consistency [^)]*\); parameters and optimizer state were not updated$/);
  });
  t.is((await model.getOptimizerState()).step, 1);
  t.is((await model.trainStep(good, { lr: 1e-3 })).step, 2, 'the next good step counts from the last one taken');
});

test('applyGradients: non-finite gradients are EMAE_NONFINITE_LOSS naming the gradients and change nothing', async (t) => {
  const model = await create(t);
  const good = makeBatch(2, 5);
  const poisoned = makeBatch(2, 6);
  poisoned.images[11] = Infinity;
  await model.accumulateGradients(good, { reset: true });
  const losses = await model.accumulateGradients(poisoned);  // losses are the caller's to check here
  t.false(Number.isFinite(losses.loss));
  await unchanged(t, model, async () => {
    for (const clipGrad of [0, 1]) {
      const err = await t.throwsAsync(model.applyGradients({ lr: 1e-3, clipGrad, gradScale: 0.5 }));
      t.is((err as Error & { code?: string }).code, 'EMAE_NONFINITE_LOSS');
      t.regex(err!.message, /^\w+: the gradients are not finite; parameters and optimizer state were not updated$/);
    }
  });
  await model.accumulateGradients(good, { reset: true });
  const r = await model.applyGradients({ lr: 1e-3 });
  t.is(r.step, 1);
  t.true(Number.isFinite(r.gradNorm) && r.gradNorm > 0);
});

// The CUDA build path: the addon reports whether it was compiled with the CUDA backend, for
// which architectures, and which devices the CUDA runtime sees. On a machine without a GPU the
// device tests are skipped and say why.
import test from 'ava';
import { Classifier, EMAE, ParallelMasker, cudaInfo } from '../lib/index.js';
import { withEnv } from './helpers/env.js';
import { unchanged } from './helpers/refusals.js';

const info = cudaInfo();
const usable = info.compiled && info.devices.length > 0;
if (!usable) {
  console.log(`cuda.test: device tests skipped: ${info.error ?? 'no CUDA device'}`);
}

test('cudaInfo reports the build and the devices in a stable shape', (t) => {
  t.is(typeof info.compiled, 'boolean');
  t.is(typeof info.architectures, 'string');
  t.true(Array.isArray(info.devices));
  if (info.compiled) {
    t.regex(info.architectures, /^\d+[a-z]?(,\d+[a-z]?)*$/, 'architectures list, e.g. 80,90');
  } else {
    t.is(info.architectures, '');
    t.regex(info.error ?? '', /without the CUDA backend/);
  }
  if (info.devices.length === 0) t.is(typeof info.error, 'string', 'no device: the reason is given');
});

(usable ? test.skip : test)("device 'cuda' without a usable CUDA device is a clear error", async (t) => {
  const err = await t.throwsAsync(EMAE.create({ preset: 'cpu-tiny', device: 'cuda' }));
  t.regex(err!.message, /cuda/i);
});

(usable ? test.skip : test)("device 'auto' falls back to the CPU without a usable CUDA device", async (t) => {
  const model = await EMAE.create({ imageSize: 8, patchSize: 2, embedDim: 8, depth: 1, numHeads: 2,
    decoderEmbedDim: 8, decoderDepth: 1, decoderNumHeads: 2, device: 'auto' });
  t.is(model.device, 'cpu');
  await model.dispose();
});

(usable ? test : test.skip)('each CUDA device reports name, compute capability >= 8.0, SMs and memory', (t) => {
  for (const d of info.devices) {
    t.true(d.name.length > 0);
    t.true(Number(d.computeCapability) >= 8, `${d.name}: compute capability ${d.computeCapability}`);
    t.true(d.multiProcessors > 0);
    t.true(d.totalMemory > 0);
    t.regex(d.gemmPath, /^(mma|sm80|sm90|refused: .+)$/, `${d.name}: GEMM path ${d.gemmPath}`);
    t.regex(d.attentionPath, /^(simt|tc|refused: .+)$/, `${d.name}: attention ${d.attentionPath}`);
    t.regex(d.stepSync, /^(host|once|refused: .+)$/, `${d.name}: step sync ${d.stepSync}`);
    t.regex(d.activations, /^(fp32|bf16|refused: .+)$/, `${d.name}: activations ${d.activations}`);
  }
});

// EMAE_CUDA_GEMM is read when a CUDA backend is created (and by cudaInfo): the default is the
// verified mma kernel; a path the device cannot run, or an unknown name, is a sentence.
const tinyCuda = { imageSize: 8, patchSize: 2, embedDim: 16, depth: 1, numHeads: 2, decoderEmbedDim: 16,
  decoderDepth: 1, decoderNumHeads: 2, device: 'cuda' as const };
const withGemmEnv = <T>(value: string | undefined, fn: () => Promise<T>) => withEnv('EMAE_CUDA_GEMM', value, fn);

(usable ? test.serial : test.skip)('EMAE_CUDA_GEMM: mma by default, unknown names and unrunnable paths refused', async (t) => {
  await withGemmEnv(undefined, async () => t.is(cudaInfo().devices[0].gemmPath, 'mma'));
  await withGemmEnv('sm80', async () => t.is(cudaInfo().devices[0].gemmPath, 'sm80'));
  await withGemmEnv('bogus', async () => {
    t.regex(cudaInfo().devices[0].gemmPath, /^refused: EMAE_CUDA_GEMM must be auto, mma, sm80 or sm90, got 'bogus'/);
    const err = await t.throwsAsync(EMAE.create(tinyCuda));
    t.regex(err!.message, /EMAE_CUDA_GEMM must be auto, mma, sm80 or sm90/);
  });
  const hopper = info.devices[0].computeCapability === '9.0' && /90a/.test(info.architectures);
  await withGemmEnv('sm90', async () => {
    if (hopper) {
      t.is(cudaInfo().devices[0].gemmPath, 'sm90');
    } else {
      const err = await t.throwsAsync(EMAE.create(tinyCuda));
      t.regex(err!.message, /needs a compute capability 9\.0 GPU and an addon built for 90a/);
    }
  });
});

(usable ? test.serial : test.skip)('EMAE_CUDA_ATTENTION: simt by default, tc on request, unknown names refused', async (t) => {
  await withEnv('EMAE_CUDA_ATTENTION', undefined, async () => t.is(cudaInfo().devices[0].attentionPath, 'simt'));
  await withEnv('EMAE_CUDA_ATTENTION', 'tc', async () => t.is(cudaInfo().devices[0].attentionPath, 'tc'));
  await withEnv('EMAE_CUDA_ATTENTION', 'flash', async () => {
    t.regex(cudaInfo().devices[0].attentionPath, /^refused: EMAE_CUDA_ATTENTION must be auto, simt or tc, got 'flash'/);
    const err = await t.throwsAsync(EMAE.create(tinyCuda));
    t.regex(err!.message, /EMAE_CUDA_ATTENTION must be auto, simt or tc/);
  });
});

(usable ? test.serial : test.skip)('every GEMM and attention path gives the same loss to bf16 precision on one batch', async (t) => {
  const images = new Float32Array(2 * 3 * 64).map((_, i) => Math.sin(i * 0.37));
  const lossOf = (gemm: string, attention: string) => withGemmEnv(gemm, () => withEnv('EMAE_CUDA_ATTENTION', attention, async () => {
    const m = await EMAE.create({ ...tinyCuda, seed: 3 });
    try {
      const perm = new Int32Array(2 * 16).map((_, i) => (i * 7) % 16);
      return (await m.lossAndGrads({ images, permutation: perm, batchSize: 2 })).loss;
    } finally {
      await m.dispose();
    }
  }));
  const gemms = ['mma', 'sm80', ...(cudaInfo().devices[0].computeCapability === '9.0' && /90a/.test(info.architectures) ? ['sm90'] : [])];
  const base = await lossOf('mma', 'simt');
  for (const [gemm, attention] of [...gemms.slice(1).map((g) => [g, 'simt']), ['mma', 'tc'], [gemms.at(-1)!, 'tc']]) {
    const loss = await lossOf(gemm, attention);
    t.true(Math.abs(loss - base) <= 2e-2 * Math.abs(base), `${gemm} + ${attention}: ${loss} vs mma + simt ${base}`);
  }
});

// EMAE_CUDA_STEP_SYNC (cuda/step_sync.cuh): host, the verified flow that reads the loss and the
// step status back mid-step, by default; once keeps the losses, the norm, the clip factor and the
// non-finite check on the device and waits once per step, at its end.
(usable ? test.serial : test.skip)('EMAE_CUDA_STEP_SYNC: host by default, once on request, unknown names refused', async (t) => {
  await withEnv('EMAE_CUDA_STEP_SYNC', undefined, async () => t.is(cudaInfo().devices[0].stepSync, 'host'));
  await withEnv('EMAE_CUDA_STEP_SYNC', 'once', async () => t.is(cudaInfo().devices[0].stepSync, 'once'));
  await withEnv('EMAE_CUDA_STEP_SYNC', 'never', async () => {
    t.regex(cudaInfo().devices[0].stepSync, /^refused: EMAE_CUDA_STEP_SYNC must be auto, host or once, got 'never'/);
    const err = await t.throwsAsync(EMAE.create(tinyCuda));
    t.regex(err!.message, /EMAE_CUDA_STEP_SYNC must be auto, host or once/);
  });
});

const tinyBatch = (B: number, seed: number, poison?: number) => {
  const images = Float32Array.from({ length: B * 3 * 64 }, (_, i) => Math.sin(i * 0.37 + seed) * Math.cos(i * 0.05 * seed));
  if (poison !== undefined) images[5] = poison;
  return { images, permutation: new ParallelMasker({ numPatches: 16, maskRatio: 0.75, seed }).next(B), batchSize: B };
};

// NaN injection on the GPU (the CPU's: test/api-errors.test.ts): the optimizer refuses the step
// from the status on the device (once) or on the host (host); either way the error names the
// loss or the gradients and nothing changes — parameters, moments, the step counter.
(usable ? test.serial : test.skip)('a non-finite loss or gradient on the GPU refuses the step and changes nothing (host and once)', async (t) => {
  for (const mode of ['host', 'once']) {
    await withEnv('EMAE_CUDA_STEP_SYNC', mode, async () => {
      const model = await EMAE.create({ ...tinyCuda, seed: 4 });
      try {
        t.is((await model.trainStep(tinyBatch(2, 1), { lr: 1e-3, clipGrad: 0.5 })).step, 1);
        await unchanged(t, model, async () => {
          let err = await t.throwsAsync(model.trainStep(tinyBatch(2, 2, Number.NaN), { lr: 1e-3, clipGrad: 0.5 }));
          t.is((err as Error & { code?: string }).code, 'EMAE_NONFINITE_LOSS', `${mode}: trainStep`);
          t.regex(err!.message, /the loss is not finite \(loss NaN, recon NaN/, `${mode}: trainStep`);
          await model.accumulateGradients(tinyBatch(2, 3, Infinity), { reset: true });
          err = await t.throwsAsync(model.applyGradients({ lr: 1e-3, clipGrad: 0.5 }));
          t.is((err as Error & { code?: string }).code, 'EMAE_NONFINITE_LOSS', `${mode}: applyGradients`);
          t.regex(err!.message, /the gradients are not finite; parameters and optimizer state were not updated$/, `${mode}: applyGradients`);
        });
        t.is((await model.trainStep(tinyBatch(2, 1), { lr: 1e-3 })).step, 2, `${mode}: training goes on`);
      } finally {
        await model.dispose();
      }
      const clf = await Classifier.create({ imageSize: 8, patchSize: 2, embedDim: 16, depth: 1, numHeads: 2, numClasses: 3, device: 'cuda', seed: 4 });
      try {
        const batch = { images: tinyBatch(2, 5, Number.NaN).images, labels: Int32Array.of(0, 2), batchSize: 2 };
        const params = await clf.stateDict(), optim = await clf.getOptimizerState();
        const err = await t.throwsAsync(clf.trainStep(batch, { lr: 1e-3, clipGrad: 1 }));
        t.regex(err!.message, /trainStep: the loss is not finite \(NaN\); parameters and optimizer state were not updated/, `${mode}: classifier`);
        t.deepEqual(await clf.stateDict(), params, `${mode}: classifier parameters unchanged`);
        t.deepEqual(await clf.getOptimizerState(), optim, `${mode}: classifier optimizer state unchanged`);
      } finally {
        await clf.dispose();
      }
    });
  }
});

// The two flows run the same kernels up to the decision (host: scale_kernel then adamw_kernel;
// once: adamw_decided_kernel, the same two roundings) and the CUDA kernels are deterministic (no
// float atomics), so a run must repeat bit for bit across them: losses, norms, parameters, moments.
// Batch sizes change between steps (the arena is re-planned, once's pinned staging grows), and
// clipping is on, so the clip factor is used.
(usable ? test.serial : test.skip)('EMAE_CUDA_STEP_SYNC host and once train bit for bit alike', async (t) => {
  const run = (mode: string) => withEnv('EMAE_CUDA_STEP_SYNC', mode, async () => {
    const model = await EMAE.create({ ...tinyCuda, seed: 6 });
    const clf = await Classifier.create({ imageSize: 8, patchSize: 2, embedDim: 16, depth: 1, numHeads: 2, numClasses: 3, dropPath: 0, device: 'cuda', seed: 6 });
    try {
      const numbers: number[] = [];
      for (const [i, B] of [2, 2, 5, 3].entries()) {
        const r = await model.trainStep(tinyBatch(B, 10 + i), { lr: 1e-2, clipGrad: 0.05 });
        numbers.push(r.loss, r.recon, r.consistency, r.gradNorm, r.step);
      }
      numbers.push((await model.accumulateGradients(tinyBatch(4, 20), { reset: true })).loss);
      numbers.push((await model.applyGradients({ lr: 1e-2, clipGrad: 0.05 })).gradNorm);
      numbers.push((await model.lossAndGrads(tinyBatch(3, 21))).loss);
      for (let i = 0; i < 2; i++) {
        const r = await clf.trainStep({ images: tinyBatch(2, 30 + i).images, labels: Int32Array.of(i, 2), batchSize: 2 }, { lr: 1e-2, clipGrad: 0.05 });
        numbers.push(r.loss, r.gradNorm, r.step);
      }
      return { numbers, state: await model.stateDict(), optim: await model.getOptimizerState(), clf: await clf.stateDict() };
    } finally {
      await model.dispose();
      await clf.dispose();
    }
  });
  const host = await run('host'), again = await run('host'), once = await run('once');
  t.log(`host: losses ${host.numbers.slice(0, 4).join(', ')}; once: ${once.numbers.slice(0, 4).join(', ')}`);
  t.deepEqual(again, host, 'host repeats itself bit for bit (the kernels are deterministic)');
  t.deepEqual(once.numbers, host.numbers, 'losses, gradient norms and steps');
  t.deepEqual(once.state, host.state, 'parameters');
  t.deepEqual(once.optim, host.optim, 'AdamW moments and step');
  t.deepEqual(once.clf, host.clf, 'classifier parameters');
});

// The CUDA build path: the addon reports whether it was compiled with the CUDA backend, for
// which architectures, and which devices the CUDA runtime sees. On a machine without a GPU the
// device tests are skipped and say why.
import test from 'ava';
import { EMAE, cudaInfo } from '../lib/index.js';

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
  }
});

// EMAE_CUDA_GEMM is read when a CUDA backend is created (and by cudaInfo): the default is the
// verified mma kernel; a path the device cannot run, or an unknown name, is a sentence.
const tinyCuda = { imageSize: 8, patchSize: 2, embedDim: 16, depth: 1, numHeads: 2, decoderEmbedDim: 16,
  decoderDepth: 1, decoderNumHeads: 2, device: 'cuda' as const };
const withEnv = async <T>(name: string, value: string | undefined, fn: () => Promise<T>): Promise<T> => {
  const before = process.env[name];
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env[name];
    else process.env[name] = before;
  }
};
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

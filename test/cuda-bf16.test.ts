// bf16 activations on the GPU (EMAE_ACTIVATIONS=bf16, issue 11): the CUDA backend stores the
// GEMM operands and the attention's inputs and outputs in bf16 and its GEMMs read a bf16 copy of
// the weights that AdamW writes. Checked against the CPU's reference of the same storage
// (EMAE_ACTIVATIONS=bf16 on a CPU model: the fp32 ops with their bf16 inputs widened and their
// outputs rounded, so both sides round the same tensors at the same places; they differ by the
// GEMMs' summation order and the bf16 roundings that order flips) and against fp32 on the GPU.
// Skipped, with the reason, without a CUDA device. The rest of the CUDA suite runs under this
// switch too in scripts/gpu-check.sh's parity_act phase.
import test from 'ava';
import { Classifier, EMAE, ParallelMasker, cudaInfo } from '../lib/index.js';
import { native } from '../lib/native.js';
import { withEnv } from './helpers/env.js';
import { relativeL2 } from './helpers/fixtures.js';
import { makeRandn } from './helpers/numeric.js';

const info = cudaInfo();
const usable = info.compiled && info.devices.length > 0;
const gpuTest = usable ? test.serial : test.skip;
if (!usable) console.log(`cuda-bf16.test: skipped: ${info.error ?? 'no CUDA device'}`);

const tiny = { imageSize: 8, patchSize: 2, embedDim: 16, depth: 2, numHeads: 2, decoderEmbedDim: 16,
  decoderDepth: 1, decoderNumHeads: 2 };
const batch = (B: number, seed: number, poison?: number) => {
  const images = Float32Array.from({ length: B * 3 * 64 }, (_, i) => Math.sin(i * 0.37 + seed) * Math.cos(i * 0.05 * seed));
  if (poison !== undefined) images[5] = poison;
  return { images, permutation: new ParallelMasker({ numPatches: 16, maskRatio: 0.75, seed }).next(B), batchSize: B };
};
const bf16 = <T>(fn: () => Promise<T>) => withEnv('EMAE_ACTIVATIONS', 'bf16', fn);

/** losses of `steps` training steps, and the parameters after them */
async function train(device: 'cpu' | 'cuda', steps: number, poisonAt = -1) {
  const model = await EMAE.create({ ...tiny, device, seed: 11 });
  try {
    const losses: number[] = [];
    for (let i = 0; i < steps; i++) {
      if (i === poisonAt) {
        const err = await model.trainStep(batch(4, 100, Number.NaN), { lr: 1e-2, clipGrad: 1 }).catch((e: Error) => e);
        if (!(err instanceof Error) || (err as Error & { code?: string }).code !== 'EMAE_NONFINITE_LOSS')
          throw new Error(`the poisoned step was not refused: ${String(err)}`);
      }
      losses.push((await model.trainStep(batch(4, i), { lr: 1e-2, clipGrad: 1 })).loss);
    }
    return { losses, state: await model.stateDict(), optim: await model.getOptimizerState() };
  } finally {
    await model.dispose();
  }
}

gpuTest('EMAE_ACTIVATIONS=bf16 picks a bf16 GEMM path, refuses mma, and an unknown value is a sentence', async (t) => {
  await bf16(async () => {
    t.regex(cudaInfo().devices[0].gemmPath, /^(sm80|sm90)$/, 'auto: a bf16-operand path');
    await withEnv('EMAE_CUDA_GEMM', 'mma', async () => {
      const err = await t.throwsAsync(EMAE.create({ ...tiny, device: 'cuda' }));
      t.regex(err!.message, /EMAE_CUDA_GEMM=mma reads fp32 operands; bf16 activations \(EMAE_ACTIVATIONS=bf16\) need/);
    });
  });
  await withEnv('EMAE_ACTIVATIONS', 'fp16', async () => {
    const err = await t.throwsAsync(EMAE.create({ ...tiny, device: 'cuda' }));
    t.regex(err!.message, /EMAE_ACTIVATIONS must be/);
  });
});

gpuTest('bf16 activations on the GPU track the CPU bf16 reference and the GPU fp32 run', async (t) => {
  const gpu = await bf16(() => train('cuda', 20));
  const reference = await bf16(() => train('cpu', 20));
  const fp32 = await train('cuda', 20);
  for (let i = 0; i < 20; i++) {
    const ref = reference.losses[i], mine = gpu.losses[i], wide = fp32.losses[i];
    // same rounding points as the reference: only summation order and the roundings it flips
    t.true(Math.abs(mine - ref) <= 1e-2 * Math.abs(ref), `step ${i}: cuda bf16 ${mine} vs cpu bf16 ${ref}`);
    t.true(Math.abs(mine - wide) <= 3e-2 * Math.abs(wide), `step ${i}: cuda bf16 ${mine} vs cuda fp32 ${wide}`);
  }
  t.notDeepEqual(gpu.losses, fp32.losses, 'the bf16 storage ran (fp32 would repeat the fp32 losses bit for bit)');
  t.true(gpu.losses[19] < gpu.losses[0], 'it learns');
});

gpuTest('bf16 activations: a refused step changes nothing, the bf16 weight copy included (host and once)', async (t) => {
  for (const mode of ['host', 'once']) {
    await withEnv('EMAE_CUDA_STEP_SYNC', mode, () => bf16(async () => {
      const clean = await train('cuda', 4), poisoned = await train('cuda', 4, 2);
      // the GEMMs read the copy: had the refused step written it, the later losses would differ
      t.deepEqual(poisoned.losses, clean.losses, `${mode}: losses after the refused step`);
      t.deepEqual(poisoned.state, clean.state, `${mode}: parameters`);
      t.deepEqual(poisoned.optim, clean.optim, `${mode}: AdamW moments and step`);
    }));
  }
});

gpuTest('bf16 activations repeat bit for bit, and host and once agree bit for bit', async (t) => {
  const run = (mode: string) => withEnv('EMAE_CUDA_STEP_SYNC', mode, () => bf16(() => train('cuda', 5)));
  const host = await run('host');
  t.deepEqual(await run('host'), host, 'same seed, same card: same losses, parameters, moments');
  t.deepEqual(await run('once'), host, 'once: the same kernels up to the decision');
});

gpuTest('bf16 activations: encode and the classifier stay close to fp32', async (t) => {
  const images = batch(3, 7).images;
  const features = async () => {
    const model = await EMAE.create({ ...tiny, device: 'cuda', seed: 12 });
    try { return await model.encode(images, { batchSize: 3 }); } finally { await model.dispose(); }
  };
  const wide = await features(), narrow = await bf16(features);
  let num = 0, den = 0;
  for (let i = 0; i < wide.length; i++) { num += (narrow[i] - wide[i]) ** 2; den += wide[i] ** 2; }
  t.true(Math.sqrt(num / den) <= 2e-2, `encode: relative L2 ${Math.sqrt(num / den)}`);

  const classify = async () => {
    const clf = await Classifier.create({ imageSize: 8, patchSize: 2, embedDim: 16, depth: 2, numHeads: 2, numClasses: 3,
      dropPath: 0, device: 'cuda', seed: 12 });
    try {
      const losses: number[] = [];
      for (let i = 0; i < 5; i++)
        losses.push((await clf.trainStep({ images: batch(2, 40 + i).images, labels: Int32Array.of(i % 3, 2), batchSize: 2 }, { lr: 1e-2 })).loss);
      return losses;
    } finally {
      await clf.dispose();
    }
  };
  const a = await classify(), b = await bf16(classify);
  for (let i = 0; i < a.length; i++) t.true(Math.abs(a[i] - b[i]) <= 3e-2 * Math.abs(a[i]), `classifier step ${i}: bf16 ${b[i]} vs fp32 ${a[i]}`);
});

// ---- per-op parity of the bf16 storage (testBackendOp's dims.bf16 = 1) ----------------------
// A device run that finds the bf16 model off pins the faulty kernel on one op here: each op with
// views runs on the GPU's bf16 storage and on the CPU's reference of it, from the same inputs.

/** The arguments each op takes as views (Act/ActIn in native/core/backend.h), which bf16 storage
 * keeps in bf16 (GEMM weights too: the model passes its bf16 weight copy). Written out apart from
 * native/backend_ops.cc, so that an argument converted there by mistake, or not converted, shows. */
const VIEWS: Record<string, { in: string[]; out: string[] }> = {
  matmul_forward: { in: ['inp', 'weight'], out: ['out'] },
  matmul_backward: { in: ['dout', 'inp', 'weight'], out: ['dinp'] },
  matmul_gelu_forward: { in: ['inp', 'weight'], out: ['pre', 'act'] },
  matmul_backward_gelu: { in: ['dout', 'inp', 'weight', 'geluInp'], out: ['dinp'] },
  layernorm_forward: { in: [], out: ['out'] },
  layernorm_backward: { in: ['dout'], out: [] },
  gelu_forward: { in: ['inp'], out: ['out'] },
  gelu_backward: { in: ['inp', 'dout'], out: ['dinp'] },
  attention_forward: { in: ['qkv'], out: ['out'] },
  attention_backward: { in: ['dout', 'qkv', 'out'], out: ['dqkv'] },
  gather_visible_patches: { in: [], out: ['cols'] },
  encoder_tokens_forward: { in: ['emb'], out: [] },
  encoder_tokens_backward: { in: [], out: ['demb'] },
  decoder_tokens_forward: { in: ['y'], out: [] },
  decoder_tokens_backward: { in: [], out: ['dy'] },
  loss: { in: ['pred'], out: ['dpred'] },
};
/** The view outputs of one call: matmul_forward with a residual writes the fp32 residual stream
 * (the core passes it so, and the CUDA GEMMs refuse a bf16 out with a residual); matmul_backward
 * with dims.noDinp (the patch embedding's) writes no dinp. */
const viewOuts = (op: string, tensors: Tensors, dims: Record<string, number>): string[] =>
  (op === 'matmul_forward' && 'residual' in tensors) || dims.noDinp ? [] : VIEWS[op].out;
/** The view inputs of one call: the GEMM backwards with dims.doutF32 take an fp32 dout (the core's
 * residual-stream gradient into proj and fc2, the classifier's dlogits). */
const viewIns = (op: string, dims: Record<string, number>): string[] =>
  dims.doutF32 ? VIEWS[op].in.filter((key) => key !== 'dout') : VIEWS[op].in;

/** x rounded to bf16 (nearest even; NaN stays a quiet NaN) and widened: core/act.h's bf16_from_float */
function roundBf16(x: Float32Array): Float32Array {
  const out = Float32Array.from(x), bits = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) {
    const u = bits[i];
    bits[i] = (u & 0x7fffffff) > 0x7f800000 ? (u | 0x400000) & 0xffff0000 : ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) << 16;
  }
  return out;
}
/** the same bits: arrays element by element, host values (the loss's numbers) as numbers */
const sameBits = (a: Float32Array | number, b: Float32Array | number): boolean =>
  typeof a === 'number' || typeof b === 'number' ? Object.is(a, b) : a.length === b.length && a.every((v, i) => Object.is(v, b[i]));

type Tensors = Record<string, Float32Array | Int32Array>;
interface OpCase { op: string; tensors: Tensors; dims: Record<string, number> }

/** One case of every op with views per shape; the shapes are cuda-parity's (small: the first two
 * of each list, for the CPU). Saved forward values (mean, rstd, out, lse) come from the CPU
 * reference's forward, as a bf16 model would hold them. */
function viewCases(seed: number, small: boolean): OpCase[] {
  const random = makeRandn(seed);
  const randn = (n: number, scale = 1) => Float32Array.from(random.randn(n, scale));
  const pick = <T>(list: T[]) => (small ? list.slice(0, 2) : list);
  const cases: OpCase[] = [];
  for (const [R, K, N] of pick([[1, 7, 5], [33, 100, 129], [257, 64, 192], [1000, 192, 576], [3200, 768, 2304]])) {
    const gemm = () => ({ inp: randn(R * K), weight: randn(N * K, 0.1), bias: randn(N) });
    const grads = () => ({ dout: randn(R * N), inp: randn(R * K), weight: randn(N * K, 0.1), dweight: randn(N * K), dbias: randn(N) });
    // without a residual (qkv, fc1, the heads: out in the activations' type) and with one (proj, fc2:
    // out is the fp32 residual stream)
    cases.push({ op: 'matmul_forward', tensors: gemm(), dims: { R, K, N } },
      { op: 'matmul_forward', tensors: { ...gemm(), residual: randn(R * N) }, dims: { R, K, N } },
      { op: 'matmul_gelu_forward', tensors: gemm(), dims: { R, K, N } });
    for (const assign of [0, 1])
      cases.push({ op: 'matmul_backward', tensors: grads(), dims: { R, K, N, assign } },
        { op: 'matmul_backward_gelu', tensors: { ...grads(), geluInp: randn(R * K, 2) }, dims: { R, K, N, assign } });
    // with the fp32 dout the core passes: the residual stream's gradient into proj's backward and
    // fc2's (with the GELU of fc1)
    for (const assign of [0, 1])
      cases.push({ op: 'matmul_backward', tensors: grads(), dims: { R, K, N, assign, doutF32: 1 } },
        { op: 'matmul_backward_gelu', tensors: { ...grads(), geluInp: randn(R * K, 2) }, dims: { R, K, N, assign, doutF32: 1 } });
  }
  // the patch embedding's backward (core/model.cc, classifier.cc): no dinp, a bf16 demb and cols
  for (const [R, K, N] of pick([[6, 12, 16], [196, 768, 192], [3136, 768, 768]]))
    cases.push({ op: 'matmul_backward', tensors: { dout: randn(R * N), inp: randn(R * K), weight: randn(N * K, 0.1),
      dweight: randn(N * K), dbias: randn(N) }, dims: { R, K, N, assign: 1, noDinp: 1 } });
  // the classifier head's backward (core/classifier.cc): fp32 dlogits (B, classes), dweight assigned
  for (const [R, K, N] of pick([[4, 16, 3], [8, 192, 10], [256, 768, 1000]]))
    cases.push({ op: 'matmul_backward', tensors: { dout: randn(R * N), inp: randn(R * K), weight: randn(N * K, 0.1), dbias: randn(N) },
      dims: { R, K, N, assign: 1, doutF32: 1 } });
  for (const [R, C] of pick([[5, 12], [300, 192], [2000, 768]])) {
    const inp = randn(R * C, 2), weight = randn(C), bias = randn(C);
    cases.push({ op: 'layernorm_forward', tensors: { inp, weight, bias }, dims: { R, C, eps: 1e-6 } });
    const fwd = native().testBackendOp('cpu', 'layernorm_forward', { inp, weight, bias }, { R, C, eps: 1e-6, bf16: 1 });
    cases.push({ op: 'layernorm_backward', tensors: { dout: randn(R * C), inp, weight, mean: fwd.mean as Float32Array,
      rstd: fwd.rstd as Float32Array, dinp: randn(R * C), dweight: randn(C), dbias: randn(C) }, dims: { R, C } });
  }
  const n = small ? 1003 : 100_003;
  cases.push({ op: 'gelu_forward', tensors: { inp: randn(n, 3) }, dims: { n } },
    { op: 'gelu_backward', tensors: { inp: randn(n, 3), dout: randn(n) }, dims: { n } });
  for (const [S, T, H, dh] of pick([[2, 17, 3, 4], [3, 65, 4, 8], [2, 50, 12, 64], [2, 197, 16, 32], [1, 257, 4, 80], [1, 50, 2, 128]])) {
    const qkv = randn(S * T * 3 * H * dh);
    cases.push({ op: 'attention_forward', tensors: { qkv }, dims: { S, T, H, dh } });
    const fwd = native().testBackendOp('cpu', 'attention_forward', { qkv }, { S, T, H, dh, bf16: 1 });
    cases.push({ op: 'attention_backward', tensors: { qkv, dout: randn(S * T * H * dh), out: fwd.out as Float32Array,
      lse: fwd.lse as Float32Array }, dims: { S, T, H, dh } });
  }
  for (const g of pick([{ batch: 2, parts: 4, visible: 4, patch: 2, channels: 3, image: 8 },
    { batch: 3, parts: 2, visible: 9, patch: 3, channels: 1, image: 18 }, { batch: 2, parts: 3, visible: 49, patch: 16, channels: 3, image: 224 }])) {
    const N = (g.image / g.patch) ** 2, S = g.batch * g.parts, D = 16;
    const perm = Int32Array.from(random.permutations(g.batch, N));
    cases.push({ op: 'gather_visible_patches', tensors: { images: randn(g.batch * g.channels * g.image * g.image), perm }, dims: g },
      { op: 'encoder_tokens_forward', tensors: { emb: randn(S * g.visible * D), cls: randn(D), pos: randn((1 + N) * D), perm }, dims: { ...g, D } },
      { op: 'encoder_tokens_backward', tensors: { dx: randn(S * (1 + g.visible) * D), dcls: randn(D), perm }, dims: { ...g, D } },
      { op: 'decoder_tokens_forward', tensors: { y: randn(S * (1 + g.visible) * D), mask: randn(D), pos: randn((1 + N) * D), perm }, dims: { ...g, D } },
      { op: 'decoder_tokens_backward', tensors: { dz: randn(S * (1 + N) * D), dmask: randn(D), perm }, dims: { ...g, D } });
    const P = g.patch * g.patch * g.channels;
    for (const l1 of [0, 1])
      cases.push({ op: 'loss', tensors: { pred: randn(S * (1 + N) * P), target: randn(g.batch * N * P), perm }, dims: { ...g, lambda: 0.7, l1 } });
  }
  return cases;
}

const opSeed = Math.floor(Math.random() * 2 ** 31);

// The CPU's bf16 mode is the fp32 op on the bf16-rounded view inputs with its view outputs rounded,
// so it must match that bit for bit: this checks testBackendOp's conversions (which arguments, in
// which direction) on this machine, without a GPU.
test(`testBackendOp bf16 on the CPU: the fp32 op on rounded views, bit for bit, for every op with views (seed ${opSeed})`, (t) => {
  const cases = viewCases(opSeed, true);
  t.deepEqual([...new Set(cases.map((c) => c.op))].sort(), Object.keys(VIEWS).sort(), 'every op with views has a case');
  for (const { op, tensors, dims } of cases) {
    const got = native().testBackendOp('cpu', op, tensors, { ...dims, bf16: 1 });
    const rounded = { ...tensors };
    for (const key of viewIns(op, dims)) rounded[key] = roundBf16(tensors[key] as Float32Array);
    const { doutF32, ...fp32Dims } = dims;  // fp32 storage: dout is fp32 anyway
    const want = native().testBackendOp('cpu', op, rounded, fp32Dims);
    for (const key of viewOuts(op, tensors, dims)) want[key] = roundBf16(want[key] as Float32Array);
    t.deepEqual(Object.keys(got).sort(), Object.keys(want).sort(), `${op}: outputs`);
    for (const key of Object.keys(want))
      t.true(sameBits(got[key] as Float32Array | number, want[key] as Float32Array | number), `${op} ${JSON.stringify(dims)}: ${key} bit for bit`);
    const wide = native().testBackendOp('cpu', op, tensors, fp32Dims);
    t.false(Object.keys(wide).every((key) => sameBits(wide[key] as Float32Array | number, got[key] as Float32Array | number)),
      `${op}: the bf16 mode is not the fp32 op`);
    if (doutF32) {  // the fp32 dout reaches the op unrounded: every output differs from a bf16 dout's
      const narrowDout = native().testBackendOp('cpu', op, tensors, { ...fp32Dims, bf16: 1 });
      // ... except that a bf16-stored output of a few values may round to the same bits either way
      // (dinp of R=1 K=7 did for one seed, 2026-12-02): those are held to it from 64 values up
      const tooFewToTell = (key: string) => viewOuts(op, tensors, dims).includes(key) && (got[key] as Float32Array).length < 64;
      for (const key of Object.keys(got).filter((k) => !tooFewToTell(k)))
        t.false(sameBits(narrowDout[key] as Float32Array, got[key] as Float32Array), `${op} ${JSON.stringify(dims)}: ${key} from the fp32 dout`);
    }
  }
});

test('testBackendOp bf16 on the CPU: AdamW writes the bf16 weight copy, and a refused step leaves it', (t) => {
  const random = makeRandn(opSeed + 1);
  const randn = (n: number, scale = 1) => Float32Array.from(random.randn(n, scale));
  const sizes = { size0: 100, decay0: 1, size1: 7, decay1: 0 }, total = 107;
  const hyper = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.05, step: 3 };
  const state = { param: randn(total), grad: randn(total), expAvg: randn(total, 0.1), expAvgSq: randn(total).map((x) => x * x) };
  for (const op of ['adamw', 'optimizer_step']) {
    const got = native().testBackendOp('cpu', op, state, { ...sizes, ...hyper, bf16: 1 });
    const wide = native().testBackendOp('cpu', op, state, { ...sizes, ...hyper });
    t.false('paramBf16' in wide, `${op}: no copy in fp32 storage`);
    t.true(sameBits(got.param as Float32Array, wide.param as Float32Array), `${op}: the fp32 update as in fp32 storage`);
    t.true(sameBits(got.paramBf16 as Float32Array, roundBf16(wide.param as Float32Array)), `${op}: paramBf16 = the new params rounded`);
    t.false(sameBits(got.paramBf16 as Float32Array, roundBf16(state.param)), `${op}: the copy moved`);
  }
  const refused = native().testBackendOp('cpu', 'optimizer_step', { ...state, loss: Float32Array.of(Number.NaN) },
    { ...sizes, ...hyper, checkLoss: 1, bf16: 1 });
  t.is(refused.updated, 0);
  t.true(sameBits(refused.paramBf16 as Float32Array, roundBf16(state.param)), 'refused: the copy keeps the old params rounded');
});

test('testBackendOp: a dims.bf16 other than 0 or 1 is refused with a sentence', (t) => {
  for (const bad of [2, -1, 0.5, 'yes', Number.NaN]) {
    const err = t.throws(() => native().testBackendOp('cpu', 'gelu_forward', { inp: Float32Array.of(1, 2) },
      { n: 2, bf16: bad as number }));
    t.regex(err!.message, /^testBackendOp: dims\.bf16 must be 0 \(fp32 activations\) or 1 \(activations stored in bf16\), got '.+'$/);
  }
  const ok = native().testBackendOp('cpu', 'gelu_forward', { inp: Float32Array.of(1, 2) }, { n: 2, bf16: 0 });
  t.true(sameBits(ok.out as Float32Array, native().testBackendOp('cpu', 'gelu_forward', { inp: Float32Array.of(1, 2) }, { n: 2 }).out as Float32Array));
});

test('testBackendOp: dims.doutF32 is 0 or 1, and only for the GEMM backwards', (t) => {
  const gemm = { dout: Float32Array.of(1.001, -2.003), inp: Float32Array.of(3), weight: Float32Array.of(0.5, -1) };
  for (const bad of [2, -1, 0.5, 'yes', Number.NaN]) {
    const err = t.throws(() => native().testBackendOp('cpu', 'matmul_backward', gemm, { R: 1, K: 1, N: 2, bf16: 1, doutF32: bad as number }));
    t.regex(err!.message, /^testBackendOp: dims\.doutF32 must be 0 or 1, got '.+'$/);
  }
  for (const doutF32 of [0, 1]) {
    const err = t.throws(() => native().testBackendOp('cpu', 'gelu_backward', { inp: Float32Array.of(1), dout: Float32Array.of(1) },
      { n: 1, bf16: 1, doutF32 }));
    t.is(err!.message, "testBackendOp: dims.doutF32 is for matmul_backward and matmul_backward_gelu, not 'gelu_backward'");
  }
  // 0: dout a view (rounded), as without the key; 1: dout as given (1.001 is not a bf16 value)
  const dweight = (dims: Record<string, number>) =>
    native().testBackendOp('cpu', 'matmul_backward', gemm, { R: 1, K: 1, N: 2, bf16: 1, ...dims }).dweight as Float32Array;
  t.true(sameBits(dweight({ doutF32: 0 }), dweight({})));
  t.false(sameBits(dweight({ doutF32: 1 }), dweight({})));
});

test('testBackendOp: dims.noDinp gives matmul_backward no dinp, the other gradients as with one; bad values refused', (t) => {
  const random = makeRandn(opSeed + 2);
  const randn = (n: number, scale = 1) => Float32Array.from(random.randn(n, scale));
  const [R, K, N] = [5, 12, 7];
  const tensors = { dout: randn(R * N), inp: randn(R * K), weight: randn(N * K, 0.1), dweight: randn(N * K), dbias: randn(N) };
  for (const bf16 of [0, 1]) {
    const full = native().testBackendOp('cpu', 'matmul_backward', tensors, { R, K, N, bf16 });
    const none = native().testBackendOp('cpu', 'matmul_backward', tensors, { R, K, N, bf16, noDinp: 1 });
    t.deepEqual(Object.keys(none).sort(), ['dbias', 'dweight'], `bf16 ${bf16}: no dinp returned`);
    t.true('dinp' in full);
    for (const key of ['dweight', 'dbias']) t.true(sameBits(none[key] as Float32Array, full[key] as Float32Array), `bf16 ${bf16}: ${key} bit for bit`);
    const zero = native().testBackendOp('cpu', 'matmul_backward', tensors, { R, K, N, bf16, noDinp: 0 });
    t.true(sameBits(zero.dinp as Float32Array, full.dinp as Float32Array), 'noDinp 0: as without the key');
  }
  for (const bad of [2, -1, 'yes']) {
    const err = t.throws(() => native().testBackendOp('cpu', 'matmul_backward', tensors, { R, K, N, noDinp: bad as number }));
    t.regex(err!.message, /^testBackendOp: dims\.noDinp must be 0 or 1, got '.+'$/);
  }
  const err = t.throws(() => native().testBackendOp('cpu', 'matmul_backward_gelu', { ...tensors, geluInp: randn(R * K) }, { R, K, N, noDinp: 1 }));
  t.is(err!.message, "testBackendOp: dims.noDinp is for matmul_backward, not 'matmul_backward_gelu'");
});

// The GPU's bf16 storage against the CPU's reference of it, op by op. Both sides read the same bf16
// inputs, so an output differs only by summation order (fp32: ~1e-6 relative, held to cuda-parity's
// fp32 tolerance 1e-5) and, where it is stored in bf16, by the roundings that order flips: one
// bf16 ulp (2^-7 relative) on the few elements that lie within the fp32 difference of a rounding
// midpoint. 4e-3 relative L2 (bf16's unit roundoff 2^-8) is a flip on about a quarter of all
// elements: not summation order but a kernel that rounds elsewhere or reads a wrong element.
// Exception: the tensor-core attention (EMAE_CUDA_ATTENTION=tc) rounds the probabilities (and in
// the backward dS) to bf16 for its products, which the reference does in fp32: 1e-2 for its bf16
// outputs, as cuda-parity holds the bf16-operand GEMMs.
gpuTest(`per-op parity of the bf16 storage with the CPU reference (seed ${opSeed})`, (t) => {
  const tc = cudaInfo().devices[0].attentionPath === 'tc';
  for (const { op, tensors, dims } of viewCases(opSeed, false)) {
    const ref = native().testBackendOp('cpu', op, tensors, { ...dims, bf16: 1 });
    const gpu = native().testBackendOp('cuda', op, tensors, { ...dims, bf16: 1 });
    // an fp32 dout: the GPU's bf16 GEMMs multiply it rounded to bf16 (gemm_dispatch.cuh's
    // convert_operands) and take dbias from its fp32 values (the row sums of that conversion),
    // while the reference multiplies it unrounded. So the products (dinp, dweight) are held to the
    // reference given the rounded dout, dbias to the one given the fp32 dout.
    const products = dims.doutF32
      ? native().testBackendOp('cpu', op, { ...tensors, dout: roundBf16(tensors.dout as Float32Array) }, { ...dims, bf16: 1 })
      : ref;
    t.deepEqual(Object.keys(gpu).sort(), Object.keys(ref).sort(), `${op}: outputs`);
    for (const key of Object.keys(ref)) {
      const want = key === 'dbias' ? ref : products;
      const narrow = viewOuts(op, tensors, dims).includes(key);
      const tol = !narrow ? 1e-5 : tc && op.startsWith('attention') ? 1e-2 : 4e-3;
      if (typeof want[key] === 'number') {  // the loss's values: sums in double of the same bf16 inputs
        const rel = Math.abs((gpu[key] as number) - (want[key] as number)) / Math.max(Math.abs(want[key] as number), 1e-12);
        t.true(rel <= tol, `${op}.${key} ${JSON.stringify(dims)}: ${gpu[key]} vs ${want[key]} (rel ${rel.toExponential(2)})`);
        continue;
      }
      const a = gpu[key] as Float32Array, err = relativeL2(a, want[key] as Float32Array);
      t.true(a.every(Number.isFinite), `${op}.${key}: every element written and finite`);
      t.log(`${op}.${key} ${JSON.stringify(dims)}: relative L2 ${err.toExponential(2)} (tolerance ${tol})`);
      t.true(err <= tol, `${op}.${key} ${JSON.stringify(dims)}: relative L2 ${err.toExponential(2)} > ${tol}`);
    }
  }
});

// AdamW's bf16 weight copy on the GPU: written by the update itself, so it must be exactly the
// new fp32 params rounded (and untouched by a refused step), whatever the step-sync mode.
gpuTest('bf16 storage on the GPU: AdamW writes the weight copy as the new params rounded, a refused step leaves it', (t) => {
  const random = makeRandn(opSeed + 2);
  const randn = (n: number, scale = 1) => Float32Array.from(random.randn(n, scale));
  const sizes = { size0: 1000, decay0: 1, size1: 7, decay1: 0, size2: 70_000, decay2: 1 }, total = 71_007;
  const hyper = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.05, step: 3 };
  const state = { param: randn(total), grad: randn(total), expAvg: randn(total, 0.1), expAvgSq: randn(total).map((x) => x * x) };
  for (const op of ['adamw', 'optimizer_step']) {
    const r = native().testBackendOp('cuda', op, state, { ...sizes, ...hyper, bf16: 1 });
    t.true(sameBits(r.paramBf16 as Float32Array, roundBf16(r.param as Float32Array)), `${op}: paramBf16 = the new params rounded`);
  }
  const refused = native().testBackendOp('cuda', 'optimizer_step', { ...state, loss: Float32Array.of(Number.NaN) },
    { ...sizes, ...hyper, checkLoss: 1, bf16: 1 });
  t.is(refused.updated, 0);
  t.true(sameBits(refused.paramBf16 as Float32Array, roundBf16(state.param)), 'refused: the copy keeps the old params rounded');
});

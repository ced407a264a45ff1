// CUDA backend parity with the CPU backend (skipped, with the reason, without a CUDA device).
// Every op runs through the same Backend interface on both (native testBackendOp) on fresh
// random inputs each run (the seed is logged); outputs an op assigns are NaN-poisoned first.
// Tolerances (relative L2 against the CPU's fp32): GEMMs run bf16 operands with fp32
// accumulation, so 1e-2 (bf16 has an 8-bit mantissa: ~4e-3 per operand); every other op is fp32
// on both sides, so 1e-5. Whole-model gradients through 2+ bf16 layers: 3e-2.
import test from 'ava';
import { EMAE, ParallelMasker, cudaInfo, type EMAEConfig } from '../lib/index.js';
import { native } from '../lib/native.js';
import { relativeL2 } from './helpers/fixtures.js';
import { makeRandn } from './helpers/numeric.js';
import { gratings } from './helpers/synthetic.js';

const info = cudaInfo();
const usable = info.compiled && info.devices.length > 0;
// the tensor-core attention (EMAE_CUDA_ATTENTION=tc, gpu-check's parity_bf16 phase) multiplies bf16
// operands like the GEMMs; the SIMT default is fp32 throughout
const attentionTol = usable && info.devices[0].attentionPath === 'tc' ? 1e-2 : 1e-5;
const gpuTest = usable ? test : test.skip;
if (!usable) console.log(`cuda-parity.test: skipped: ${info.error ?? 'no CUDA device'}`);

const seed = Math.floor(Math.random() * 2 ** 31);
const random = makeRandn(seed);
const randn = (n: number, scale = 1) => Float32Array.from(random.randn(n, scale));
const permutations = (B: number, N: number) => Int32Array.from(random.permutations(B, N));

type Tensors = Record<string, Float32Array | Int32Array>;

/** keyTol: a tolerance for one output (e.g. a host loss) instead of tolAll */
function compare(t: any, name: string, tensors: Tensors, dims: Record<string, number>, tolAll: number,
  keyTol: Record<string, number> = {}) {
  const cpu = native().testBackendOp('cpu', name, tensors, dims);
  const gpu = native().testBackendOp('cuda', name, tensors, dims);
  t.deepEqual(Object.keys(gpu).sort(), Object.keys(cpu).sort());
  for (const key of Object.keys(cpu)) {
    const a = gpu[key], b = cpu[key], tol = keyTol[key] ?? tolAll;
    if (typeof b === 'number') {
      const rel = Math.abs((a as number) - b) / Math.max(Math.abs(b), 1e-12);
      t.true(rel <= tol, `${name}.${key}: ${a} vs ${b} (rel ${rel.toExponential(2)})`);
      continue;
    }
    const arr = a as Float32Array;
    t.true(arr.every(Number.isFinite), `${name}.${key}: every element written and finite`);
    const err = relativeL2(arr, b as Float32Array);
    t.log(`${name}.${key}: relative L2 ${err.toExponential(2)} (tolerance ${tol})`);
    t.true(err <= tol, `${name}.${key}: relative L2 ${err.toExponential(2)} > ${tol}`);
  }
}

gpuTest(`per-op parity with the CPU backend (seed ${seed})`, (t) => {
  for (const [R, K, N] of [[1, 7, 5], [33, 100, 129], [257, 64, 192], [1000, 192, 576], [3200, 768, 2304]]) {
    compare(t, 'matmul_forward', { inp: randn(R * K), weight: randn(N * K, 0.1), bias: randn(N), residual: randn(R * N) }, { R, K, N }, 1e-2);
    compare(t, 'matmul_backward', { dout: randn(R * N), inp: randn(R * K), weight: randn(N * K, 0.1), dweight: randn(N * K), dbias: randn(N) }, { R, K, N }, 1e-2);
    // assign: dweight's input (random here) is overwritten, not added to
    compare(t, 'matmul_backward', { dout: randn(R * N), inp: randn(R * K), weight: randn(N * K, 0.1), dweight: randn(N * K), dbias: randn(N) }, { R, K, N, assign: 1 }, 1e-2);
    // no dinp, as the patch embedding's backward: only the weight-gradient GEMM and dbias run
    compare(t, 'matmul_backward', { dout: randn(R * N), inp: randn(R * K), weight: randn(N * K, 0.1), dweight: randn(N * K), dbias: randn(N) }, { R, K, N, assign: 1, noDinp: 1 }, 1e-2);
    // the MLP's GELU beside its GEMMs: fused into the GEMM's epilogue on the bf16 paths
    // (EMAE_CUDA_GEMM=sm80|sm90), composed on mma
    compare(t, 'matmul_gelu_forward', { inp: randn(R * K), weight: randn(N * K, 0.1), bias: randn(N) }, { R, K, N }, 1e-2);
    compare(t, 'matmul_backward_gelu', { dout: randn(R * N), inp: randn(R * K), weight: randn(N * K, 0.1), geluInp: randn(R * K, 2), dweight: randn(N * K), dbias: randn(N) }, { R, K, N }, 1e-2);
    compare(t, 'matmul_backward_gelu', { dout: randn(R * N), inp: randn(R * K), weight: randn(N * K, 0.1), geluInp: randn(R * K, 2), dweight: randn(N * K), dbias: randn(N) }, { R, K, N, assign: 1 }, 1e-2);
  }
  for (const [R, C] of [[5, 12], [300, 192], [2000, 768]]) {
    const inp = randn(R * C, 2), weight = randn(C), bias = randn(C);
    compare(t, 'layernorm_forward', { inp, weight, bias }, { R, C, eps: 1e-6 }, 1e-5);
    const fwd = native().testBackendOp('cpu', 'layernorm_forward', { inp, weight, bias }, { R, C, eps: 1e-6 });
    compare(t, 'layernorm_backward', { dout: randn(R * C), inp, weight, mean: fwd.mean as Float32Array, rstd: fwd.rstd as Float32Array, dinp: randn(R * C), dweight: randn(C), dbias: randn(C) }, { R, C }, 1e-5);
  }
  const n = 100_003;
  compare(t, 'gelu_forward', { inp: randn(n, 3) }, { n }, 1e-5);
  compare(t, 'gelu_backward', { inp: randn(n, 3), dout: randn(n) }, { n }, 1e-5);
  for (const [S, T, H, dh] of [[2, 17, 3, 4], [3, 65, 4, 8], [2, 50, 12, 64], [2, 197, 16, 32], [1, 257, 4, 80], [1, 50, 2, 128]]) {
    const qkv = randn(S * T * 3 * H * dh);
    compare(t, 'attention_forward', { qkv }, { S, T, H, dh }, attentionTol);
    const fwd = native().testBackendOp('cpu', 'attention_forward', { qkv }, { S, T, H, dh });
    compare(t, 'attention_backward', { qkv, dout: randn(S * T * H * dh), out: fwd.out as Float32Array, lse: fwd.lse as Float32Array }, { S, T, H, dh }, attentionTol);
  }
  for (const g of [{ batch: 2, parts: 4, visible: 4, patch: 2, channels: 3, image: 8 }, { batch: 3, parts: 2, visible: 9, patch: 3, channels: 1, image: 18 }, { batch: 2, parts: 3, visible: 49, patch: 16, channels: 3, image: 224 }]) {
    const N = (g.image / g.patch) ** 2, P = g.patch * g.patch * g.channels, S = g.batch * g.parts;
    const images = randn(g.batch * g.channels * g.image * g.image), perm = permutations(g.batch, N);
    compare(t, 'gather_visible_patches', { images, perm }, g, 1e-6);
    compare(t, 'patchify_target', { images }, { ...g, normPix: 1 }, 1e-5);
    compare(t, 'patchify_target', { images }, { ...g, normPix: 0 }, 1e-6);
    const D = 16;
    compare(t, 'encoder_tokens_forward', { emb: randn(S * g.visible * D), cls: randn(D), pos: randn((1 + N) * D), perm }, { ...g, D }, 1e-6);
    compare(t, 'encoder_tokens_backward', { dx: randn(S * (1 + g.visible) * D), dcls: randn(D), perm }, { ...g, D }, 1e-5);
    compare(t, 'decoder_tokens_forward', { y: randn(S * (1 + g.visible) * D), mask: randn(D), pos: randn((1 + N) * D), perm }, { ...g, D }, 1e-6);
    compare(t, 'decoder_tokens_backward', { dz: randn(S * (1 + N) * D), dmask: randn(D), perm }, { ...g, D }, 1e-5);
    for (const l1 of [0, 1])
      compare(t, 'loss', { pred: randn(S * (1 + N) * P), target: randn(g.batch * N * P), perm }, { ...g, lambda: 0.7, l1 }, 1e-5);
  }
  const sizes = { size0: 1000, decay0: 1, size1: 7, decay1: 0, size2: 70_000, decay2: 1 };
  const total = 71_007;
  compare(t, 'grad_norm', { grad: randn(total) }, sizes, 1e-6);
  const v = randn(total).map((x) => x * x);
  compare(t, 'adamw', { param: randn(total), grad: randn(total), expAvg: randn(total, 0.1), expAvgSq: v }, { ...sizes, lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.05, step: 3 }, 1e-5);
  // per-segment lr multipliers (fine-tuning's layer-wise lr decay in one call): parity with the
  // CPU, and on the GPU itself each segment moves bitwise as its own call at lr·s (segment_lr)
  const scales = { lrScale0: 0.65 ** 3, lrScale1: 0.5, lrScale2: 1 };
  const hyper = { lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05, step: 5 };
  const state = { param: randn(total), grad: randn(total), expAvg: randn(total, 0.1), expAvgSq: v };
  compare(t, 'adamw', state, { ...sizes, ...scales, ...hyper }, 1e-5);
  const all = native().testBackendOp('cuda', 'adamw', state, { ...sizes, ...scales, ...hyper });
  let offset = 0;
  for (const [i, n] of [1000, 7, 70_000].entries()) {
    const part = (x: Float32Array) => x.slice(offset, offset + n);
    const s = [scales.lrScale0, scales.lrScale1, scales.lrScale2][i];
    const own = native().testBackendOp('cuda', 'adamw', { param: part(state.param), grad: part(state.grad), expAvg: part(state.expAvg), expAvgSq: part(state.expAvgSq) },
      { size0: n, decay0: (sizes as Record<string, number>)[`decay${i}`], ...hyper, lr: Math.fround(Math.fround(hyper.lr) * s) });
    for (const key of ['param', 'expAvg', 'expAvgSq']) {
      const a = (all[key] as Float32Array).subarray(offset, offset + n), b = own[key] as Float32Array;
      t.true(a.every((x, k) => Object.is(x, b[k])), `cuda adamw segment ${i} (lrScale ${s}) ${key}: bitwise as its own call at lr·s`);
    }
    offset += n;
  }
  // the optimizer step as adamw_step runs it (the norm into the step status, then AdamW deciding
  // from it where it lies; EMAE_CUDA_STEP_SYNC picks the host or the device decision): with and
  // without clipping as the CPU does it, and a refused step (a non-finite gradient, or a non-finite
  // loss when checked) changes nothing on the GPU either, gradients included
  const stepState = { param: randn(total), grad: randn(total, 0.01), expAvg: randn(total, 0.1), expAvgSq: v };
  const norm = Math.sqrt(native().testBackendOp('cpu', 'grad_norm', { grad: stepState.grad }, sizes).normSquared as number);
  for (const clipGrad of [0, norm / 4, norm * 0.999])
    compare(t, 'optimizer_step', stepState, { ...sizes, ...hyper, clipGrad }, 1e-5, { normSquared: 1e-6 });
  const nanGrad = stepState.grad.slice();
  nanGrad[1003] = Number.NaN;
  const refused: [string, Tensors, Record<string, number>][] = [
    ['NaN gradient', { ...stepState, grad: nanGrad }, {}],
    ['NaN loss, checked', { ...stepState, loss: Float32Array.of(Number.NaN) }, { checkLoss: 1 }],
    ['-Infinity loss, checked', { ...stepState, loss: Float32Array.of(-Infinity) }, { checkLoss: 1 }],
  ];
  for (const [what, tensors, extra] of refused) {
    const r = native().testBackendOp('cuda', 'optimizer_step', tensors, { ...sizes, ...hyper, clipGrad: norm / 4, ...extra });
    t.is(r.updated, 0, `cuda ${what}: refused`);
    for (const key of ['param', 'grad', 'expAvg', 'expAvgSq'])
      t.true((r[key] as Float32Array).every((x, k) => Object.is(x, (tensors[key] as Float32Array)[k])), `cuda ${what}: ${key} unchanged`);
  }
  const unchecked = native().testBackendOp('cuda', 'optimizer_step', { ...stepState, loss: Float32Array.of(Number.NaN) }, { ...sizes, ...hyper });
  t.false((unchecked.param as Float32Array).every((x, k) => Object.is(x, stepState.param[k])), 'cuda: an unchecked loss does not stop the update');
});

// The fine-tuning ops (cuda/classifier.cuh against native/cpu/classifier_ops.cc and the CPU
// column sum). Four of them follow the CPU's summation order and roundings (bit for bit by the
// kernel file's claim, logged here), but are held only to the fp32 tolerance 1e-5. The
// cross-entropy runs fp32 per element on the GPU and double on the CPU: dlogits to 1e-5, the loss
// to 1e-6, also with logits near ±1e3 (the kernel keeps log Σ exp relative to the row max; an
// fp32 emulation of it measured ~3e-7 there — unverified on a GPU).
gpuTest(`fine-tuning ops parity with the CPU backend (seed ${seed})`, (t) => {
  const bitwise = (name: string, tensors: Tensors, dims: Record<string, number>, key: string) => {
    const a = native().testBackendOp('cpu', name, tensors, dims)[key] as Float32Array;
    const b = native().testBackendOp('cuda', name, tensors, dims)[key] as Float32Array;
    t.log(`${name}.${key}: ${a.every((v, i) => Object.is(v, b[i])) ? 'bitwise equal' : 'not bitwise equal'} to the CPU`);
  };
  // R = 65: a partial second 64-row chunk; C = 197·192: the pos_embed gradient of a small ViT
  for (const [R, C] of [[1, 5], [65, 300], [256, 197 * 192], [4100, 3]]) {
    const tensors = { src: randn(R * C), dst: randn(C) };
    compare(t, 'column_sum_accumulate', tensors, { R, C }, 1e-5);
    bitwise('column_sum_accumulate', tensors, { R, C }, 'dst');
  }
  for (const [S, T, D] of [[2, 2, 3], [3, 50, 130], [4, 197, 768]])
    for (const mean of [0, 1]) {
      compare(t, 'pool_tokens_forward', { x: randn(S * T * D) }, { S, T, D, mean }, 1e-5);
      compare(t, 'pool_tokens_backward', { dpooled: randn(S * D) }, { S, T, D, mean }, 1e-5);
      bitwise('pool_tokens_forward', { x: randn(S * T * D) }, { S, T, D, mean }, 'pooled');
    }
  // S = 70000 > 65535 strides the grid's y; n = 1.1M > 4096·256 strides its x
  for (const [S, n] of [[6, 7], [8, 197 * 192], [70_000, 3], [2, 1_100_000]]) {
    const keep = Float32Array.from({ length: S }, (_, s) => [0, 1.25, 1, 1 / 0.9][s % 4]);
    const res = randn(S * n), branch = randn(S * n);
    // alias 0: out separate; 1: out = res; 2: out = branch (as core/blocks.cc calls it)
    for (const alias of [0, 1, 2]) compare(t, 'residual_scaled_forward', { res, branch, keep }, { S, n, alias }, 1e-5);
    for (const alias of [0, 1]) compare(t, 'scale_rows', { inp: branch, keep }, { S, n, alias }, 1e-5);
    bitwise('residual_scaled_forward', { res, branch, keep }, { S, n, alias: 2 }, 'out');
  }
  // B = 1, C = 1; C < one block of threads; C = 1000 (ImageNet) over several strides; logits ±1e3
  for (const [B, C, scale, offset] of [[1, 1, 1, 0], [8, 10, 3, 0], [64, 1000, 3, 0], [3, 5000, 1, 0], [16, 100, 3, 1e3]]) {
    const logits = randn(B * C, scale).map((v, i) => v + (Math.floor(i / C) % 2 ? -offset : offset));
    const soft = randn(B * C).map(Math.exp);
    for (let b = 0; b < B; b++) {
      const row = soft.subarray(b * C, (b + 1) * C), sum = row.reduce((s, v) => s + v, 0);
      row.forEach((v, i) => { row[i] = v / sum; });
    }
    const smoothed = Float32Array.from({ length: B * C }, (_, i) => 0.1 / C + (i % C === (7 * Math.floor(i / C)) % C ? 0.9 : 0));
    for (const targets of [soft, smoothed])
      compare(t, 'cross_entropy', { logits, targets }, { B, C }, 1e-5, { loss: 1e-6 });
  }
});

const small: EMAEConfig = {
  imageSize: 32, patchSize: 4, channels: 3, embedDim: 64, depth: 2, numHeads: 2, decoderEmbedDim: 32,
  decoderDepth: 1, decoderNumHeads: 2, mlpRatio: 4, maskRatio: 0.75, seed: 9,
};

gpuTest('whole-model loss and gradients match the CPU backend', async (t) => {
  const cpu = await EMAE.create({ ...small, device: 'cpu' });
  const gpu = await EMAE.create({ ...small, device: 'cuda' });
  try {
    t.is(gpu.device, 'cuda');
    await gpu.loadStateDict(await cpu.stateDict());
    const B = 8;
    const batch = { images: gratings(B, 3, 32, seed), permutation: permutations(B, 64), batchSize: B };
    const a = await cpu.lossAndGrads(batch), b = await gpu.lossAndGrads(batch);
    t.log(`loss cpu ${a.loss} cuda ${b.loss}; recon ${a.recon} / ${b.recon}; consistency ${a.consistency} / ${b.consistency}`);
    t.true(Math.abs(a.loss - b.loss) <= 1e-2 * Math.abs(a.loss));
    for (const name of Object.keys(a.grads)) {
      const err = relativeL2(b.grads[name], a.grads[name]);
      t.true(err <= 3e-2, `grad ${name}: relative L2 ${err.toExponential(2)}`);
    }
  } finally {
    await cpu.dispose();
    await gpu.dispose();
  }
});

gpuTest('classifier: loss, gradients, one layer-decay step and logits match the CPU backend', async (t) => {
  const { Classifier } = await import('../lib/index.js');
  const config = { imageSize: 32, patchSize: 4, channels: 3, embedDim: 64, depth: 2, numHeads: 2, mlpRatio: 4, numClasses: 10, dropPath: 0.1, seed: 9 };
  for (const globalPool of [true, false]) {
    const cpu = await Classifier.create({ ...config, globalPool, device: 'cpu' });
    const gpu = await Classifier.create({ ...config, globalPool, device: 'cuda' });
    try {
      t.is(gpu.device, 'cuda');
      const start = await cpu.stateDict();
      // a trained-looking head, so the encoder's gradients are not ~1e-5 of the head's
      for (const name of Object.keys(start)) if (name.startsWith('head.')) start[name] = randn(start[name].length, 0.2);
      await cpu.loadStateDict(start);
      await gpu.loadStateDict(start);
      const B = 8;
      const batch = { images: gratings(B, 3, 32, seed), labels: Int32Array.from({ length: B }, (_, i) => i % 10), batchSize: B };
      const a = await cpu.lossAndGrads(batch), b = await gpu.lossAndGrads(batch);  // drop path: the same mask (seed, step 0)
      t.log(`globalPool ${globalPool}: loss cpu ${a.loss} cuda ${b.loss}`);
      t.true(Math.abs(a.loss - b.loss) <= 1e-2 * Math.abs(a.loss));
      for (const name of Object.keys(a.grads)) {
        const err = relativeL2(b.grads[name], a.grads[name]);
        t.true(err <= 3e-2, `globalPool ${globalPool}: grad ${name}: relative L2 ${err.toExponential(2)}`);
      }
      const opts = { lr: 1e-3, weightDecay: 0.05, layerDecay: 0.75 };
      await cpu.trainStep(batch, opts);
      await gpu.trainStep(batch, opts);
      const [pa, pb] = [await cpu.stateDict(), await gpu.stateDict()];
      // the weight matrices (biases start at 0, where Adam's ±lr steps for tiny gradients differ in sign)
      for (const p of cpu.paramInfo().filter((q) => q.shape.length >= 2 && q.name !== 'cls_token')) {
        const err = relativeL2(pb[p.name], pa[p.name]);
        t.true(err <= 1e-2, `globalPool ${globalPool}: ${p.name} after one step: relative L2 ${err.toExponential(2)}`);
      }
      const images = gratings(16, 3, 32, seed + 1);
      const la = await cpu.predict(images), lb = await gpu.predict(images);
      t.true(relativeL2(lb, la) <= 3e-2, `logits: relative L2 ${relativeL2(lb, la).toExponential(2)}`);
    } finally {
      await cpu.dispose();
      await gpu.dispose();
    }
  }
});

gpuTest('300 training steps on the GPU track the CPU loss curve', async (t) => {
  const curves: number[][] = [];
  for (const device of ['cpu', 'cuda'] as const) {
    const model = await EMAE.create({ ...small, device, normPixLoss: false });
    const masker = ParallelMasker.fromConfig(model.config, 1);
    const data = gratings(64, 3, 32, 5);
    const per = 3 * 32 * 32, B = 16, curve: number[] = [];
    for (let step = 0; step < 300; step++) {
      const start = (step * B) % 64;
      const r = await model.trainStep({ images: data.slice(start * per, (start + B) * per), permutation: masker.next(B), batchSize: B },
        { lr: 1e-3 * Math.min(1, (step + 1) / 30) });
      curve.push(r.loss);
    }
    curves.push(curve);
    await model.dispose();
  }
  const [cpu, gpu] = curves;
  const window = (c: number[], i: number) => c.slice(i, i + 30).reduce((s, x) => s + x, 0) / 30;
  for (let i = 0; i < 300; i += 30) {
    const a = window(cpu, i), b = window(gpu, i);
    t.log(`steps ${i}-${i + 29}: cpu ${a.toFixed(4)} cuda ${b.toFixed(4)}`);
    // bf16 GEMMs make the trajectories drift apart slowly; the curves must stay within 5%
    t.true(Math.abs(a - b) <= 0.05 * a, `window ${i}: cpu ${a} vs cuda ${b}`);
  }
  t.true(window(gpu, 270) < 0.6 * window(gpu, 0), 'the GPU run learns');
});

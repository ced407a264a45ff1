// The per-op profiler (EMAE_PROFILE=1 when a model is created; native/core/profiling_backend.h):
// the calls it counts are exactly the ops the model makes per step (derived here from the config
// and native/core/model.cc, blocks.cc), reset starts again, results are bitwise those without it,
// and it is off (and says so) unless asked for; on a CUDA device (skipped without one) the event
// clock the same. EMAE_PROFILE is read at creation: the tests that set it run serially.
import test from 'ava';
import {
  Classifier, EMAE, ParallelMasker, cudaInfo, formatProfile, profileByOp,
  type ClassifierConfig, type EMAEConfig, type ParamInfo, type ProfileReport,
} from '../lib/index.js';
import { gratings } from './helpers/synthetic.js';

// decoder width ≠ encoder width, so every GEMM shape tells its layer apart
const tiny: EMAEConfig = {
  imageSize: 8, patchSize: 2, channels: 3, embedDim: 16, depth: 2, numHeads: 2, decoderEmbedDim: 8, decoderDepth: 1,
  decoderNumHeads: 2, mlpRatio: 2, maskRatio: 0.75, device: 'cpu', threads: 1, seed: 5,
};
const B = 2;
const clfConfig: ClassifierConfig = {
  imageSize: 8, patchSize: 2, channels: 3, embedDim: 16, depth: 2, numHeads: 2, mlpRatio: 2, numClasses: 3,
  dropPath: 0, device: 'cpu', threads: 1, seed: 2,
};

async function withProfileEnv<T>(value: string | undefined, fn: () => Promise<T>): Promise<T> {
  const before = process.env.EMAE_PROFILE;
  if (value === undefined) delete process.env.EMAE_PROFILE;
  else process.env.EMAE_PROFILE = value;
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env.EMAE_PROFILE;
    else process.env.EMAE_PROFILE = before;
  }
}
const createModel = (profile: string | undefined, config: EMAEConfig = tiny) => withProfileEnv(profile, () => EMAE.create(config));

/**
 * The gradient ranges a fresh backward zeroes before adding into them (params.cc
 * accumulated_ranges): the trainable tensors other than the linear weights, adjacent ones merged.
 * The flat layout follows the state-dict order of paramInfo().
 */
function zeroedGradRanges(params: ParamInfo[]): number {
  let ranges = 0, open = false;
  for (const p of params) {
    const linearWeight = p.name.endsWith('.weight') && p.shape.length >= 2;
    const zeroed = p.trainable && !linearWeight;
    if (zeroed && !open) ranges++;
    open = zeroed;
  }
  return ranges;
}

/** 'op' or 'op shape' → calls of one forward + backward (loss_and_grads) of `batch` images. */
function lossAndGradsCalls(model: EMAE, batch: number): Map<string, number> {
  const c = model.config;
  const K = c.parts, V = c.visiblePerPart, N = c.numPatches, P = c.patchDim, D = c.embedDim, Dd = c.decoderEmbedDim;
  const S = batch * K, T = 1 + V, Td = 1 + N, R = S * T, Rd = S * Td, Cpp = c.channels * c.patchSize ** 2;
  const calls = new Map<string, number>();
  const add = (op: string, shape?: number[], n = 1) => {
    const key = shape ? `${op} ${shape.join('×')}` : op;
    calls.set(key, (calls.get(key) ?? 0) + n);
  };
  // a stack of `depth` blocks (blocks.cc): forward, then backward
  const blocks = (rows: number, t: number, d: number, heads: number, depth: number) => {
    const h = c.mlpRatio * d, attention = [S, t, heads, d / heads];
    add('layernorm_forward', [rows, d], 2 * depth);
    add('matmul_forward', [rows, d, 3 * d], depth);            // qkv
    add('attention_forward', attention, depth);
    add('matmul_forward', [rows, d, d], depth);                // proj (+ residual)
    add('matmul_gelu_forward', [rows, d, h], depth);           // fc1 + GELU
    add('matmul_forward', [rows, h, d], depth);                // fc2 (+ residual)
    add('matmul_backward_gelu', [rows, h, d], depth);          // fc2, through the GELU
    add('matmul_backward', [rows, d, h], depth);               // fc1
    add('layernorm_backward', [rows, d], 2 * depth);
    add('matmul_backward', [rows, d, d], depth);               // proj
    add('attention_backward', attention, depth);
    add('matmul_backward', [rows, d, 3 * d], depth);           // qkv
  };
  add('upload_input', undefined, 2);                           // images, permutations
  add('gather_visible_patches');
  add('matmul_forward', [S * V, Cpp, D]);                      // patch embedding
  add('encoder_tokens_forward');
  blocks(R, T, D, c.numHeads, c.depth);
  add('layernorm_forward', [R, D]);                            // norm
  add('matmul_forward', [R, D, Dd]);                           // decoder_embed
  add('decoder_tokens_forward');
  blocks(Rd, Td, Dd, c.decoderNumHeads, c.decoderDepth);
  add('layernorm_forward', [Rd, Dd]);                          // decoder_norm
  add('matmul_forward', [Rd, Dd, P]);                          // decoder_pred
  add('patchify_target');
  add('loss_forward_backward');
  add('zero', undefined, zeroedGradRanges(model.paramInfo()) + 2);  // + the residual gradient, twice
  add('matmul_backward', [Rd, Dd, P]);
  add('layernorm_backward', [Rd, Dd]);
  add('decoder_tokens_backward');
  add('matmul_backward', [R, D, Dd]);
  add('layernorm_backward', [R, D]);
  add('encoder_tokens_backward');
  add('matmul_backward', [S * V, Cpp, D]);
  return calls;
}

/** The report's calls as 'op' / 'op shape' → calls. */
function reportCalls(report: ProfileReport): Map<string, number> {
  return new Map(report.rows.map((r) => [r.shape ? `${r.op} ${r.shape}` : r.op, r.calls]));
}
const scaled = (calls: Map<string, number>, k: number) => new Map([...calls].map(([key, n]) => [key, n * k]));
const sorted = (calls: Map<string, number>) => [...calls].sort(([a], [b]) => a.localeCompare(b));

function batches(model: EMAE, count: number) {
  const c = model.config;
  const masker = ParallelMasker.fromConfig(c, 7);
  const images = gratings(B * count, c.channels, c.imageSize, 3);
  const per = B * c.channels * c.imageSize * c.imageSize;
  return Array.from({ length: count }, (_, i) => ({ images: images.slice(i * per, (i + 1) * per), permutation: masker.next(B), batchSize: B }));
}

test.serial('a profiled trainStep counts exactly the ops the model makes, with their shapes', async (t) => {
  const model = await createModel('1');
  t.teardown(() => model.dispose());
  const steps = 3;
  for (const batch of batches(model, steps)) await model.trainStep(batch, { lr: 1e-3 });
  const report = await model.profile();
  if (!report.enabled) return t.fail('profiling should be on');
  const perStep = lossAndGradsCalls(model, B);
  perStep.set('grad_norm_squared', 1);
  perStep.set('adamw', 1);  // no 'scale': clipping, when on, is part of adamw
  perStep.set('download', 1);  // the step status (losses, gradient norm): the step's one read
  t.deepEqual(sorted(reportCalls(report)), sorted(scaled(perStep, steps)));
  t.is(report.steps, steps);
  t.is(report.timing, 'host-clock');
  // the CPU ops are synchronous and run inside their step: their time is part of it
  t.true(report.opsMs > 0 && report.opsMs <= report.stepMs, `ops ${report.opsMs} ms, steps ${report.stepMs} ms`);
  t.is(report.gapMs, report.stepMs - report.opsMs);
  for (let i = 0; i < report.rows.length; i++) {
    const r = report.rows[i];
    t.true(r.totalMs >= 0 && r.meanMs === r.totalMs / r.calls, r.op);
    if (i > 0) t.true(report.rows[i - 1].totalMs >= r.totalMs, 'rows by time, largest first');
  }
  // by op: the shapes summed
  const byOp = profileByOp(report);
  t.is(byOp.find((r) => r.op === 'matmul_forward')?.calls,
    steps * (1 + 3 * tiny.depth! + 1 + 3 * tiny.decoderDepth! + 1));  // patch, qkv/proj/fc2 per block, decoder_embed, pred
  t.is(byOp.reduce((n, r) => n + r.calls, 0), report.rows.reduce((n, r) => n + r.calls, 0));
  const table = formatProfile(report, { top: 5 });
  t.regex(table, /^steps 3 \(host-clock\): step [\d.]+ ms, ops [\d.]+ ms, gaps [\d.]+ ms/);
  t.is(table.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| op |')).length, 10, 'top 5 by op, top 5 by op and shape');
});

test.serial('reset starts again from zero; calls outside steps are not recorded; lossAndGrads is a step of its own', async (t) => {
  const model = await createModel('1');
  t.teardown(() => model.dispose());
  const [first, second] = batches(model, 2);
  await model.trainStep(first, { lr: 1e-3 });
  const before = await model.profile({ reset: true });
  if (!before.enabled) return t.fail('profiling should be on');
  t.is(before.steps, 1);
  t.deepEqual(await model.profile(), { enabled: true, timing: 'host-clock', steps: 0, stepMs: 0, opsMs: 0, gapMs: 0, rows: [] });
  await model.loadStateDict(await model.stateDict());
  await model.getOptimizerState();
  t.like(await model.profile(), { steps: 0, opsMs: 0 }, 'stateDict, loadStateDict, getOptimizerState are not steps');
  t.is((await model.profile() as ProfileReport).rows.length, 0);
  await model.lossAndGrads(second);
  const after = await model.profile();
  if (!after.enabled) return t.fail('profiling should be on');
  const expected = lossAndGradsCalls(model, B);
  expected.set('download', 2);  // the losses (accumulation and data parallelism need them now) and the gradients
  t.is(after.steps, 1);
  t.deepEqual(sorted(reportCalls(after)), sorted(expected));
});

test.serial('profiling changes no bit: losses, gradient norms, parameters and gradients', async (t) => {
  const plain = await createModel(undefined);
  const profiled = await createModel('1');
  t.teardown(async () => { await plain.dispose(); await profiled.dispose(); });
  let clipped = 0;
  for (const batch of batches(plain, 3)) {
    const a = await plain.trainStep(batch, { lr: 2e-3, clipGrad: 0.5 });
    const b = await profiled.trainStep(batch, { lr: 2e-3, clipGrad: 0.5 });
    t.deepEqual(b, a);
    if (a.gradNorm > 0.5) clipped += 1;
  }
  const [a, b] = [await plain.stateDict(), await profiled.stateDict()];
  for (const name of Object.keys(a)) t.deepEqual(b[name], a[name], name);
  const [batch] = batches(plain, 1);
  const [ga, gb] = [await plain.lossAndGrads(batch), await profiled.lossAndGrads(batch)];
  t.is(gb.loss, ga.loss);
  for (const name of Object.keys(ga.grads)) t.deepEqual(gb.grads[name], ga.grads[name], name);
  const report = await profiled.profile();
  t.true(clipped > 0, 'clipping ran (inside adamw)');
  t.true(report.enabled && report.rows.find((r) => r.op === 'adamw')?.calls === 3, 'three trainSteps');
});

test.serial('profiling is off by default and with EMAE_PROFILE=0, and says so', async (t) => {
  for (const value of [undefined, '', '0']) {
    const model = await createModel(value);
    await model.trainStep(batches(model, 1)[0], { lr: 1e-3 });
    const report = await model.profile({ reset: true });
    t.deepEqual(report, { enabled: false, reason: 'profiling is off: set EMAE_PROFILE=1 in the environment before the model is created' },
      `EMAE_PROFILE=${value}`);
    await model.dispose();
  }
});

test.serial('an unknown EMAE_PROFILE value is refused when a model or classifier is created', async (t) => {
  for (const value of ['yes', 'true', '2', ' 1']) {
    const err = await withProfileEnv(value, () => t.throwsAsync(EMAE.create(tiny), { instanceOf: RangeError }));
    t.is(err?.message, `EMAE_PROFILE must be 1 (profile the backend's ops) or 0 / unset (off), got '${value}'`);
  }
  await withProfileEnv('on', () => t.throwsAsync(Classifier.create({ ...clfConfig }), { instanceOf: RangeError, message: /EMAE_PROFILE must be 1/ }));
});

test.serial('profile() checks its options', async (t) => {
  const model = await createModel(undefined);
  t.teardown(() => model.dispose());
  await t.throwsAsync(model.profile({ reset: 1 as unknown as boolean }), { instanceOf: TypeError, message: /reset/ });
  await t.throwsAsync(model.profile({ rest: true } as never), { instanceOf: TypeError, message: /rest/ });
  await t.throwsAsync(model.profile(null as never), { instanceOf: TypeError });
  await model.dispose();
  await t.throwsAsync(model.profile(), { message: /disposed/ });
});

test.serial('a profiled classifier: one step per call, its loss and head GEMM counted, the same losses', async (t) => {
  const plain = await withProfileEnv(undefined, () => Classifier.create(clfConfig));
  const profiled = await withProfileEnv('1', () => Classifier.create(clfConfig));
  t.teardown(async () => { await plain.dispose(); await profiled.dispose(); });
  t.deepEqual(await plain.profile(), { enabled: false, reason: 'profiling is off: set EMAE_PROFILE=1 in the environment before the model is created' });
  const images = gratings(B, 3, 8, 1), labels = Int32Array.from([0, 2]);
  for (let i = 0; i < 2; i++) {
    const a = await plain.trainStep({ images, labels, batchSize: B }, { lr: 1e-3 });
    const b = await profiled.trainStep({ images, labels, batchSize: B }, { lr: 1e-3 });
    t.deepEqual(b, a);
  }
  t.deepEqual(await profiled.predict(images), await plain.predict(images));
  const report = await profiled.profile();
  if (!report.enabled) return t.fail('profiling should be on');
  const calls = reportCalls(report);
  t.is(report.steps, 3);  // two trainSteps and a predict
  t.is(calls.get('cross_entropy_forward_backward'), 2);
  t.is(calls.get(`matmul_forward ${B}×16×3`), 3, 'the head, in every step');
  t.is(calls.get(`matmul_backward ${B}×16×3`), 2);
  t.is(calls.get('adamw'), 2);
  t.is(calls.get('download'), 3, 'the step status of each trainStep, the logits of predict');
});

const cuda = cudaInfo();
const cudaUsable = cuda.compiled && cuda.devices.length > 0 && Number(cuda.devices[0].computeCapability) >= 8;

(cudaUsable ? test.serial : test.skip)('CUDA: the event clock counts the same ops, changes no bit, and its ops fit inside its steps', async (t) => {
  const config: EMAEConfig = { ...tiny, device: 'cuda' };
  const plain = await createModel(undefined, config);
  const profiled = await createModel('1', config);
  t.teardown(async () => { await plain.dispose(); await profiled.dispose(); });
  const steps = 3;
  for (const batch of batches(plain, steps)) {
    const a = await plain.trainStep(batch, { lr: 2e-3 });
    const b = await profiled.trainStep(batch, { lr: 2e-3 });
    t.deepEqual(b, a);  // the CUDA step is deterministic (no float atomics): the decorator must keep it so
  }
  const [a, b] = [await plain.stateDict(), await profiled.stateDict()];
  for (const name of Object.keys(a)) t.deepEqual(b[name], a[name], name);
  const report = await profiled.profile({ reset: true });
  if (!report.enabled) return t.fail('profiling should be on');
  t.is(report.timing, 'cuda-events');
  t.is(report.steps, steps);
  const perStep = lossAndGradsCalls(profiled, B);
  perStep.set('grad_norm_squared', 1);
  perStep.set('adamw', 1);
  t.deepEqual(sorted(reportCalls(report)), sorted(scaled(perStep, steps)));
  // every op's events lie between its step's: the ops' device time is part of the steps'
  t.true(report.opsMs > 0 && report.opsMs <= report.stepMs, `ops ${report.opsMs} ms, steps ${report.stepMs} ms`);
  t.true(report.rows.every((r) => r.totalMs >= 0));
  // the windows resolved at later steps (without waiting) and at the report add up the same way
  const [batch] = batches(profiled, 1);
  for (let i = 0; i < 4; i++) await profiled.lossAndGrads(batch);
  const after = await profiled.profile();
  if (!after.enabled) return t.fail('profiling should be on');
  const expected = lossAndGradsCalls(profiled, B);
  expected.set('download', 1);
  t.is(after.steps, 4);
  t.deepEqual(sorted(reportCalls(after)), sorted(scaled(expected, 4)));
  t.true(after.opsMs > 0 && after.opsMs <= after.stepMs);
});

// The CPU backend's optimizer passes (native/cpu/optim.cc: one parallel region over fixed-size
// pieces of all segments, vectorized) against plain references: the squared gradient norm
// against a JS sum in double, AdamW against the float64 per-element formula (testOp 'adamw',
// itself checked against torch.optim.AdamW in ops.test.ts), with and without decay per segment.
// Segment sizes cross the 16384-float pieces and include tiny ones.
import test from 'ava';
import { native } from '../lib/native.js';
import { randn as randnFrom, relL2, seededRng } from './helpers/numeric.js';

const rng = seededRng(11);
const randn = (n: number, scale = 1) => randnFrom(n, rng, scale);
const segments = [[1000, 1], [7, 0], [70_000, 1], [16_384, 0], [1, 1], [16_385, 0]] as const;
const dims: Record<string, number> = {};
segments.forEach(([size, decay], i) => { dims[`size${i}`] = size; dims[`decay${i}`] = decay; });
const total = segments.reduce((a, [n]) => a + n, 0);
const f32 = (x: Float64Array) => Float32Array.from(x);  // testBackendOp takes float tensors
const f64 = (x: ArrayLike<number>) => Float64Array.from(x);  // testOp takes double ones

test('cpu grad_norm: Σ g² over all segments, in double', (t) => {
  const grad = f32(randn(total));
  const r = native().testBackendOp('cpu', 'grad_norm', { grad }, dims);
  let ref = 0;
  for (const g of grad) ref += g * g;
  t.true(Math.abs(r.normSquared - ref) <= 1e-12 * ref, `${r.normSquared} vs ${ref}`);
  const again = native().testBackendOp('cpu', 'grad_norm', { grad }, dims);
  t.is(again.normSquared, r.normSquared, 'bitwise repeatable');
});

test('cpu adamw: every segment matches the per-element formula, decay where the segment says', (t) => {
  const param = f32(randn(total)), grad = f32(randn(total)), expAvg = f32(randn(total, 0.1));
  const expAvgSq = f32(randn(total).map((x) => x * x));
  const hyper = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.05, step: 3 };
  const r = native().testBackendOp('cpu', 'adamw', { param, grad, expAvg, expAvgSq }, { ...dims, ...hyper });
  let offset = 0;
  for (const [n, decay] of segments) {
    const part = (x: Float32Array) => f64(x.subarray(offset, offset + n));
    const ref = native().testOp('adamw', { param: part(param), grad: part(grad), expAvg: part(expAvg), expAvgSq: part(expAvgSq) },
      { n, decay, ...hyper });
    for (const [key, want] of [['param', ref.param], ['expAvg', ref.expAvg], ['expAvgSq', ref.expAvgSq]] as const) {
      const e = relL2(part(r[key]), want);
      t.true(e < 1e-6, `segment of ${n} (decay ${decay}) ${key}: relative L2 ${e.toExponential(2)}`);
    }
    // decay on/off is visible: the no-decay reference differs for decayed segments
    if (decay) {
      const plain = native().testOp('adamw', { param: part(param), grad: part(grad), expAvg: part(expAvg), expAvgSq: part(expAvgSq) },
        { n, decay: 0, ...hyper });
      t.true(relL2(part(r.param), plain.param) > relL2(part(r.param), ref.param), `segment of ${n}: decay applied`);
    }
    offset += n;
  }
});

// Layer-wise lr decay is the segments' lr multiplier (dims lrScaleI): one AdamW call over all
// segments must move each exactly as a call of its own at lr · scale would, the product taken
// in double and rounded once to float as the backends do (segment_lr in core/elementwise.h) —
// what fine-tuning's one call per step replaced (a call per layer group, lr rounded the same way).
test('cpu adamw: a segment with lrScale s moves bitwise like its own call at lr·s', (t) => {
  const scales = [0.65 ** 4, 1, 0.65 ** 3, 0.75 ** 2, 0.5, 0.65 ** 13];
  const scaled: Record<string, number> = { ...dims };
  scales.forEach((s, i) => { scaled[`lrScale${i}`] = s; });
  const param = f32(randn(total)), grad = f32(randn(total)), expAvg = f32(randn(total, 0.1));
  const expAvgSq = f32(randn(total).map((x) => x * x));
  const hyper = { lr: 3e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05, step: 7 };
  const all = native().testBackendOp('cpu', 'adamw', { param, grad, expAvg, expAvgSq }, { ...scaled, ...hyper });
  let offset = 0;
  segments.forEach(([n, decay], i) => {
    const part = (x: Float32Array) => x.slice(offset, offset + n);
    const lr = Math.fround(Math.fround(hyper.lr) * scales[i]);  // (float)((double)(float)lr · s)
    const own = native().testBackendOp('cpu', 'adamw', { param: part(param), grad: part(grad), expAvg: part(expAvg), expAvgSq: part(expAvgSq) },
      { size0: n, decay0: decay, ...hyper, lr });
    for (const key of ['param', 'expAvg', 'expAvgSq'] as const) {
      const a = (all[key] as Float32Array).subarray(offset, offset + n), b = own[key] as Float32Array;
      t.true(a.every((v, k) => Object.is(v, b[k])), `segment ${i} (${n} floats, lrScale ${scales[i]}) ${key}: bitwise equal`);
    }
    // and the float64 formula at the same lr agrees (testOp's lrScale is applied the same way)
    const ref = native().testOp('adamw', { param: f64(part(param)), grad: f64(part(grad)), expAvg: f64(part(expAvg)), expAvgSq: f64(part(expAvgSq)) },
      { n, decay, ...hyper, lrScale: scales[i] });
    const e = relL2(f64((all.param as Float32Array).subarray(offset, offset + n)), ref.param);
    t.true(e < 1e-6, `segment ${i} param vs the float64 formula: relative L2 ${e.toExponential(2)}`);
    offset += n;
  });
  // the multiplier is used: a segment at scale 0.5 moves half as far (to rounding) as at 1
  const half = native().testBackendOp('cpu', 'adamw', { param, grad, expAvg, expAvgSq }, { ...dims, ...hyper, lrScale0: 0.5 });
  const full = native().testBackendOp('cpu', 'adamw', { param, grad, expAvg, expAvgSq }, { ...dims, ...hyper });
  const step = (r: Record<string, unknown>, k: number) => (r.param as Float32Array)[k] - param[k];
  const ratio = step(half, 3) / step(full, 3);
  t.true(Math.abs(ratio - 0.5) < 1e-3, `update ratio ${ratio}`);
});

test('cpu adamw: lrScale 1 on every segment is bitwise the default', (t) => {
  const ones: Record<string, number> = { ...dims };
  segments.forEach((_, i) => { ones[`lrScale${i}`] = 1; });
  const tensors = { param: f32(randn(total)), grad: f32(randn(total)), expAvg: f32(randn(total, 0.1)), expAvgSq: f32(randn(total).map((x) => x * x)) };
  const hyper = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.05, step: 2 };
  const a = native().testBackendOp('cpu', 'adamw', tensors, { ...ones, ...hyper });
  const b = native().testBackendOp('cpu', 'adamw', tensors, { ...dims, ...hyper });
  for (const key of ['param', 'expAvg', 'expAvgSq'] as const)
    t.true((a[key] as Float32Array).every((v, k) => Object.is(v, (b[key] as Float32Array)[k])), `${key}: bitwise equal`);
});

// ---- the optimizer step as adamw_step runs it (testBackendOp 'optimizer_step'): the norm into
// the step status, then Backend::adamw deciding from the status where it lies (core/step_status.h
// decide_step). It must equal the flow it replaced bit for bit — the norm read back, the clip
// factor (float)(clip / (‖g‖ + 1e-6)) taken on the host, grads scaled, then plain AdamW — and a
// non-finite norm (or loss, when checked) must change nothing at all, gradients included.

const hyper = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.05, step: 4 };
const bitwise = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((v, k) => Object.is(v, b[k]));
const startState = () => ({ param: f32(randn(total)), grad: f32(randn(total, 0.01)), expAvg: f32(randn(total, 0.1)),
  expAvgSq: f32(randn(total).map((x) => x * x)) });

test('cpu optimizer_step: clipping equals norm → host factor → scale → adamw, bit for bit', (t) => {
  const s = startState();
  const normSquared = native().testBackendOp('cpu', 'grad_norm', { grad: s.grad }, dims).normSquared as number;
  const norm = Math.sqrt(normSquared);
  // a dozen factors: a factor rounded another way (in float from a float norm, say) differs in ~1 of 4
  for (const clipGrad of [1 / 3, 0.999, 0.5, 0.1, 0.77, 0.01, 0.9, 0.25, 0.6, 0.42, 0.05, 0.33].map((f) => Math.fround(norm * f))) {
    const r = native().testBackendOp('cpu', 'optimizer_step', s, { ...dims, ...hyper, clipGrad });
    t.is(r.normSquared, normSquared, 'the norm in the status is grad_norm\'s');
    t.is(r.updated, 1);
    // the replaced flow: factor rounded once to float, each gradient scaled in float
    const factor = Math.fround(clipGrad / (norm + 1e-6));
    const clipped = s.grad.map((g) => Math.fround(g * factor));
    t.false(bitwise(clipped, s.grad), 'clipping changes the gradients');
    t.true(bitwise(r.grad as Float32Array, clipped), `clip ${clipGrad}: grads hold the clipped gradients`);
    const old = native().testBackendOp('cpu', 'adamw', { ...s, grad: clipped }, { ...dims, ...hyper });
    for (const key of ['param', 'expAvg', 'expAvgSq'] as const)
      t.true(bitwise(r[key] as Float32Array, old[key] as Float32Array), `clip ${clipGrad}: ${key} bitwise as before`);
  }
});

test('cpu optimizer_step: no clipping (clipGrad 0 or >= the norm) is plain adamw, gradients untouched', (t) => {
  const s = startState();
  const norm = Math.sqrt(native().testBackendOp('cpu', 'grad_norm', { grad: s.grad }, dims).normSquared as number);
  const plain = native().testBackendOp('cpu', 'adamw', s, { ...dims, ...hyper });
  for (const clipGrad of [0, norm * 1.001, 1e30]) {
    const r = native().testBackendOp('cpu', 'optimizer_step', s, { ...dims, ...hyper, clipGrad });
    t.is(r.updated, 1);
    t.true(bitwise(r.grad as Float32Array, s.grad), `clip ${clipGrad}: gradients unchanged`);
    for (const key of ['param', 'expAvg', 'expAvgSq'] as const)
      t.true(bitwise(r[key] as Float32Array, plain[key] as Float32Array), `clip ${clipGrad}: ${key} as plain adamw`);
  }
});

test('cpu optimizer_step: a non-finite gradient or (checked) loss changes nothing, gradients included', (t) => {
  const s = startState();
  const unchanged = (r: Record<string, unknown>, what: string, grad = s.grad) => {
    t.is(r.updated, 0, `${what}: refused`);
    for (const [key, want] of [['param', s.param], ['expAvg', s.expAvg], ['expAvgSq', s.expAvgSq], ['grad', grad]] as const)
      t.true(bitwise(r[key] as Float32Array, want), `${what}: ${key} unchanged`);
  };
  for (const bad of [Number.NaN, Infinity, -Infinity]) {
    const grad = s.grad.slice();
    grad[70_500] = bad;  // inside the third segment
    const r = native().testBackendOp('cpu', 'optimizer_step', { ...s, grad }, { ...dims, ...hyper, clipGrad: 1e-3, checkLoss: 1 });
    t.false(Number.isFinite(r.normSquared as number));
    unchanged(r, `gradient ${bad}`, grad);
    for (const checkLoss of [0, 1]) {
      const lossCase = native().testBackendOp('cpu', 'optimizer_step', { ...s, loss: Float32Array.of(bad) },
        { ...dims, ...hyper, clipGrad: 1e-3, checkLoss });
      if (checkLoss) unchanged(lossCase, `loss ${bad}, checked`);
      else t.false(bitwise(lossCase.param as Float32Array, s.param), `loss ${bad}, not checked: the update runs`);
    }
  }
  // a finite loss with checkLoss and finite gradients updates
  const ok = native().testBackendOp('cpu', 'optimizer_step', { ...s, loss: Float32Array.of(3.5) }, { ...dims, ...hyper, checkLoss: 1 });
  t.is(ok.updated, 1);
  t.false(bitwise(ok.param as Float32Array, s.param));
});

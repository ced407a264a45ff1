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

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

// Op-level tests of the CPU kernels through native testOp (float64 instantiation): finite
// differences for every backward, known answers for the forwards, and bad input.
// FD tolerance: central differences with h = 1e-6 in float64 have truncation error ~h² and
// round-off ~1e-16/h ≈ 1e-10 relative to O(1) values, so analytic and numeric gradients must
// agree to 1e-6 (relative to the largest gradient entry checked).
import test from 'ava';
import { native } from '../lib/native.js';
import { centralDifference, dot, makeRandn } from './helpers/numeric.js';

const op = (name: string, tensors: Record<string, Float64Array>, dims: Record<string, number>) =>
  native().testOp(name, tensors, dims);
const { randn, permutations, pick } = makeRandn(20261126);
const H = 1e-6, TOL = 1e-6;

/**
 * Checks the backward of an op by finite differences of L = Σ out ⊙ G, for each input named in
 * `wrt` (input key → gradient key of the backward's result).
 */
function gradcheck(t: any, label: string, forward: () => Float64Array, G: Float64Array,
  inputs: Record<string, Float64Array>, grads: Record<string, Float64Array>, wrt: Record<string, string>) {
  for (const [inputKey, gradKey] of Object.entries(wrt)) {
    const x = inputs[inputKey], g = grads[gradKey];
    t.is(g.length, x.length, `${label}: ${gradKey} has the input's size`);
    let worst = 0, scale = 1e-12;
    for (const i of pick(x.length, 30)) {
      const numeric = centralDifference(() => dot(forward(), G), x, i, H);
      worst = Math.max(worst, Math.abs(numeric - g[i]));
      scale = Math.max(scale, Math.abs(numeric));
    }
    t.true(worst <= TOL * Math.max(scale, 1), `${label} d/d${inputKey}: max error ${worst.toExponential(2)} (scale ${scale.toExponential(2)})`);
  }
}

test('matmul: backward matches finite differences', (t) => {
  const R = 7, K = 5, N = 6;
  const inputs = { inp: randn(R * K), weight: randn(N * K), bias: randn(N), residual: randn(R * N) };
  const G = randn(R * N);
  const forward = () => op('matmul_forward', inputs, { R, K, N }).out;
  const g = op('matmul_backward', { dout: G, inp: inputs.inp, weight: inputs.weight }, { R, K, N });
  gradcheck(t, 'matmul', forward, G, inputs, g, { inp: 'dinp', weight: 'dweight', bias: 'dbias' });
});

test('layernorm: backward matches finite differences; forward known answer', (t) => {
  const R = 4, C = 9, eps = 1e-6;
  const inputs = { inp: randn(R * C, 2), weight: randn(C), bias: randn(C) };
  const G = randn(R * C);
  const forward = () => op('layernorm_forward', inputs, { R, C, eps }).out;
  const fwd = op('layernorm_forward', inputs, { R, C, eps });
  const g = op('layernorm_backward', { dout: G, inp: inputs.inp, weight: inputs.weight, mean: fwd.mean, rstd: fwd.rstd }, { R, C });
  gradcheck(t, 'layernorm', forward, G, inputs, g, { inp: 'dinp', weight: 'dweight', bias: 'dbias' });

  // [1, 2, 3, 4]: mean 2.5, biased variance 1.25 → (x − 2.5)/√(1.25 + eps)
  const known = op('layernorm_forward', { inp: Float64Array.of(1, 2, 3, 4), weight: Float64Array.of(1, 1, 1, 1), bias: new Float64Array(4) }, { R: 1, C: 4, eps: 0 });
  const expected = [-1.5, -0.5, 0.5, 1.5].map((v) => v / Math.sqrt(1.25));
  known.out.forEach((v, i) => t.true(Math.abs(v - expected[i]) < 1e-12));
  t.true(Math.abs(known.mean[0] - 2.5) < 1e-15);
});

test('gelu: exact erf GELU known answers and backward', (t) => {
  const pts = Float64Array.of(-3, -1, 0, 0.5, 1, 2);
  // x·Φ(x) from Python's math.erf
  const expected = [-0.00404969409489031, -0.15865525393145707, 0, 0.34573123063700656, 0.8413447460685429, 1.9544997361036416];
  const out = op('gelu_forward', { inp: pts }, { n: pts.length }).out;
  out.forEach((v, i) => t.true(Math.abs(v - expected[i]) < 1e-12, `gelu(${pts[i]}) = ${v}`));
  const n = 40;
  const inputs = { inp: randn(n, 2) };
  const G = randn(n);
  const g = op('gelu_backward', { inp: inputs.inp, dout: G }, { n });
  gradcheck(t, 'gelu', () => op('gelu_forward', inputs, { n }).out, G, inputs, g, { inp: 'dinp' });
});

test('attention: forward equals a naive softmax(QKᵀ/√dh)V; backward matches finite differences', (t) => {
  const S = 2, T = 5, Hh = 2, dh = 3, D = Hh * dh;
  const inputs = { qkv: randn(S * T * 3 * D) };
  const fwd = op('attention_forward', inputs, { S, T, H: Hh, dh });
  const q = inputs.qkv;
  for (let s = 0; s < S; s++)
    for (let h = 0; h < Hh; h++)
      for (let i = 0; i < T; i++) {
        const at = (tok: number, part: number, d: number) => q[(s * T + tok) * 3 * D + part * D + h * dh + d];
        const scores = Array.from({ length: T }, (_, j) => {
          let acc = 0;
          for (let d = 0; d < dh; d++) acc += at(i, 0, d) * at(j, 1, d);
          return acc / Math.sqrt(dh);
        });
        const mx = Math.max(...scores), e = scores.map((x) => Math.exp(x - mx)), sum = e.reduce((a, b) => a + b, 0);
        for (let d = 0; d < dh; d++) {
          const ref = e.reduce((acc, w, j) => acc + (w / sum) * at(j, 2, d), 0);
          t.true(Math.abs(fwd.out[(s * T + i) * D + h * dh + d] - ref) < 1e-12);
        }
        t.true(Math.abs(fwd.lse[(s * Hh + h) * T + i] - (mx + Math.log(sum))) < 1e-12);
      }
  const G = randn(S * T * D);
  const g = op('attention_backward', { dout: G, qkv: inputs.qkv, out: fwd.out, lse: fwd.lse }, { S, T, H: Hh, dh });
  gradcheck(t, 'attention', () => op('attention_forward', inputs, { S, T, H: Hh, dh }).out, G, inputs, g, { qkv: 'dqkv' });
});

const geometry = { batch: 2, parts: 3, visible: 4, patch: 2, channels: 3, image: 8 };  // N = 16, K_total = 4

test('patchify and gather: (row, col, channel) target order vs (channel, row, col) conv order', (t) => {
  const g = { batch: 1, parts: 1, visible: 1, patch: 2, channels: 2, image: 2 };
  // image [c][y][x] = 100·c + 10·y + x
  const images = Float64Array.from([0, 1, 10, 11, 100, 101, 110, 111]);
  const target = op('patchify_target', { images }, { ...g, normPix: 0 }).target;
  t.deepEqual([...target], [0, 100, 1, 101, 10, 110, 11, 111]);
  const cols = op('gather_visible_patches', { images, perm: Float64Array.of(0) }, g).cols;
  t.deepEqual([...cols], [0, 1, 10, 11, 100, 101, 110, 111]);
  // normPix: per patch (x − mean) / sqrt(unbiased var + 1e-6)
  const norm = op('patchify_target', { images }, { ...g, normPix: 1 }).target;
  const v = [0, 100, 1, 101, 10, 110, 11, 111], m = v.reduce((a, b) => a + b) / 8;
  const sd = Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / 7 + 1e-6);
  norm.forEach((x, i) => t.true(Math.abs(x - (v[i] - m) / sd) < 1e-12));
});

test('encoder tokens: placement known answer and backward', (t) => {
  const g = geometry, D = 3, N = 16, S = g.batch * g.parts;
  const perm = permutations(g.batch, N);
  const inputs = { emb: randn(S * g.visible * D), cls: randn(D), pos: randn((1 + N) * D) };
  const x = op('encoder_tokens_forward', { ...inputs, perm }, { ...g, D }).x;
  for (let bk = 0; bk < S; bk++) {
    const b = Math.floor(bk / g.parts), k = bk % g.parts;
    for (let d = 0; d < D; d++) t.true(Math.abs(x[bk * 5 * D + d] - (inputs.cls[d] + inputs.pos[d])) < 1e-15);
    for (let v = 0; v < g.visible; v++) {
      const n = perm[b * N + k * g.visible + v];
      for (let d = 0; d < D; d++)
        t.true(Math.abs(x[(bk * 5 + 1 + v) * D + d] - (inputs.emb[(bk * g.visible + v) * D + d] + inputs.pos[(1 + n) * D + d])) < 1e-15);
    }
  }
  const G = randn(S * 5 * D);
  const grads = op('encoder_tokens_backward', { dx: G, perm }, { ...g, D });
  gradcheck(t, 'encoder tokens', () => op('encoder_tokens_forward', { ...inputs, perm }, { ...g, D }).x, G, inputs, grads, { emb: 'demb', cls: 'dcls' });
});

test('decoder tokens: visible tokens at their patch, mask tokens elsewhere; backward', (t) => {
  const g = geometry, D = 2, N = 16, S = g.batch * g.parts, V = g.visible;
  const perm = permutations(g.batch, N);
  const inputs = { y: randn(S * (1 + V) * D), mask: randn(D), pos: randn((1 + N) * D) };
  const z = op('decoder_tokens_forward', { ...inputs, perm }, { ...g, D }).z;
  for (let bk = 0; bk < S; bk++) {
    const b = Math.floor(bk / g.parts), k = bk % g.parts;
    const visible = new Map<number, number>();
    for (let v = 0; v < V; v++) visible.set(perm[b * N + k * V + v], v);
    for (let n = 0; n < N; n++)
      for (let d = 0; d < D; d++) {
        const v = visible.get(n);
        const src = v === undefined ? inputs.mask[d] : inputs.y[(bk * (1 + V) + 1 + v) * D + d];
        t.true(Math.abs(z[(bk * (1 + N) + 1 + n) * D + d] - (src + inputs.pos[(1 + n) * D + d])) < 1e-15);
      }
  }
  const G = randn(S * (1 + N) * D);
  const grads = op('decoder_tokens_backward', { dz: G, perm }, { ...g, D });
  gradcheck(t, 'decoder tokens', () => op('decoder_tokens_forward', { ...inputs, perm }, { ...g, D }).z, G, inputs, grads, { y: 'dy', mask: 'dmask' });
});

/** A plain JS reference of L_rec and L_con (DESIGN §1). */
function lossReference(pred: Float64Array, target: Float64Array, perm: Float64Array, B: number, K: number, V: number, N: number, P: number, l1: boolean) {
  let rec = 0, recCount = 0, con = 0, pairs = 0;
  for (let b = 0; b < B; b++)
    for (let n = 0; n < N; n++) {
      const pos = [...perm.slice(b * N, (b + 1) * N)].indexOf(n);
      const masked = Array.from({ length: K }, (_, k) => k).filter((k) => !(pos >= k * V && pos < (k + 1) * V));
      const y = (k: number, p: number) => pred[((b * K + k) * (1 + N) + 1 + n) * P + p];
      for (const k of masked) {
        let s = 0;
        for (let p = 0; p < P; p++) s += (y(k, p) - target[(b * N + n) * P + p]) ** 2;
        rec += s / P;
        recCount++;
      }
      for (const i of masked)
        for (const j of masked) {
          if (i === j) continue;
          let s = 0;
          for (let p = 0; p < P; p++) s += l1 ? Math.abs(y(i, p) - y(j, p)) : (y(i, p) - y(j, p)) ** 2;
          con += s / P;
          pairs++;
        }
    }
  return { recon: rec / recCount, consistency: pairs ? con / pairs : 0 };
}

for (const [K, l1] of [[1, false], [2, true], [3, false], [3, true], [4, false], [4, true]] as const) {
  test(`loss K=${K} of 4, ${l1 ? 'l1' : 'mse'}: values match the reference; dpred is the stop-gradient derivative`, (t) => {
    const g = { batch: 2, parts: K, visible: 4, patch: 2, channels: 1, image: 8 };  // N = 16, P = 4
    const N = 16, P = 4, S = g.batch * K;
    const perm = permutations(g.batch, N);
    const inputs = { pred: randn(S * (1 + N) * P), target: randn(g.batch * N * P) };
    const lambda = 0.7;
    const r = op('loss', { ...inputs, perm }, { ...g, lambda, l1: l1 ? 1 : 0 });
    const ref = lossReference(inputs.pred, inputs.target, perm, g.batch, K, 4, N, P, l1);
    t.true(Math.abs(r.recon[0] - ref.recon) < 1e-12);
    t.true(Math.abs(r.consistency[0] - ref.consistency) < 1e-12);
    t.true(Math.abs(r.loss[0] - (ref.recon + lambda * ref.consistency)) < 1e-12);
    if (K >= 3) t.true(ref.consistency > 0);
    // S holds (i, j) and (j, i) and only the first member gets gradient, so dpred is the true
    // derivative of recon + (λ/2)·consistency
    const objective = () => {
      const v = op('loss', { ...inputs, perm }, { ...g, lambda, l1: l1 ? 1 : 0 });
      return v.recon[0] + (lambda / 2) * v.consistency[0];
    };
    let worst = 0, scale = 1e-12;
    for (const i of pick(inputs.pred.length, 40)) {
      const numeric = centralDifference(objective, inputs.pred, i, H);
      worst = Math.max(worst, Math.abs(numeric - r.dpred[i]));
      scale = Math.max(scale, Math.abs(numeric));
    }
    t.true(worst <= TOL * Math.max(scale, 1e-2), `dpred max error ${worst.toExponential(2)}`);
    for (let bk = 0; bk < S; bk++) for (let p = 0; p < P; p++) t.is(r.dpred[bk * (1 + N) * P + p], 0, 'cls rows get no gradient');
  });
}

test('adamw: one and two steps match torch.optim.AdamW, with and without decay', (t) => {
  const n = 5, lr = 1e-2, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weightDecay = 0.1;
  for (const decay of [0, 1]) {
    let param = randn(n), m = new Float64Array(n), v = new Float64Array(n);
    const ref = { p: Float64Array.from(param), m: new Float64Array(n), v: new Float64Array(n) };
    for (let step = 1; step <= 2; step++) {
      const grad = randn(n);
      const r = op('adamw', { param, grad, expAvg: m, expAvgSq: v }, { n, lr, beta1, beta2, eps, weightDecay, step, decay });
      for (let i = 0; i < n; i++) {  // torch.optim.AdamW, single tensor
        if (decay) ref.p[i] *= 1 - lr * weightDecay;
        ref.m[i] = beta1 * ref.m[i] + (1 - beta1) * grad[i];
        ref.v[i] = beta2 * ref.v[i] + (1 - beta2) * grad[i] ** 2;
        const denom = Math.sqrt(ref.v[i]) / Math.sqrt(1 - beta2 ** step) + eps;
        ref.p[i] -= (lr / (1 - beta1 ** step)) * ref.m[i] / denom;
        // the float32 hyper-parameters make 1e-6 the right tolerance
        t.true(Math.abs(r.param[i] - ref.p[i]) < 1e-6 * Math.max(1, Math.abs(ref.p[i])), `decay ${decay} step ${step} [${i}]`);
      }
      param = r.param; m = r.expAvg; v = r.expAvgSq;
    }
  }
});

test('testOp: bad input is a clear error', (t) => {
  t.throws(() => op('no_such_op', {}, {}), { instanceOf: RangeError, message: /unknown op/ });
  t.throws(() => op('gelu_forward', { inp: new Float64Array(3) }, { n: 4 }), { instanceOf: RangeError, message: /inp/ });
  t.throws(() => native().testOp('gelu_forward', { inp: new Float32Array(4) as any }, { n: 4 }), { instanceOf: TypeError, message: /Float64Array for inp/ });
  t.throws(() => op('gelu_forward', { inp: new Float64Array(4) }, {}), { instanceOf: TypeError, message: /n/ });
});

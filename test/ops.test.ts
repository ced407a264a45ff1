// Op-level tests of every CPU op through the internal entry point native().testOp, run on the
// ops' float64 instantiation: finite-difference checks of every backward, known answers for the
// forwards (JS references of DESIGN.md §1), and bad input.
//
// FD tolerance: for L = Σ out ⊙ G, the central difference (L(x+h) − L(x−h)) / 2h with h = 1e-6
// in float64 has a truncation error ~h²·|L'''|/6 ≈ 1e-13 and a round-off error ~ε·|L|/h ≈
// 1e-16·|L|/1e-6 ≈ 1e-10·|L| (|L| ≲ 100 here), so analytic and numeric gradients must agree to
// far better than 1e-6 relative to max(1, largest |gradient| checked); a wrong index, a missing
// term or a factor 2 gives O(1e-2 .. 1).
import test from 'ava';
import { native } from '../lib/native.js';
import { dot, fdGradient, randn as randnFrom, randomPermutations, relL2, sampleIndices, seededRng } from './helpers/numeric.js';

type Tensors = Record<string, Float64Array>;
const op = (name: string, tensors: Tensors, dims: Record<string, number>) => native().testOp(name, tensors, dims);

const rng = seededRng(20261126);
const randn = (n: number, scale = 1) => randnFrom(n, rng, scale);
const permutations = (B: number, N: number) => randomPermutations(B, N, rng);
/** All of 0..n−1 when n ≤ count, else `count` distinct random indices. */
const coords = (n: number, count = 40) => sampleIndices(n, count, rng);
const close = (a: number, b: number, tol: number) => Math.abs(a - b) <= tol * Math.max(1, Math.abs(b));

const H = 1e-6, TOL = 1e-6;

/** Central differences of the scalar f w.r.t. x at `at` (x perturbed in place and restored). */
const fd = (f: () => number, x: Float64Array, at: readonly number[]) => fdGradient(f, x, at, H);

/** max |numeric − analytic[at]| ≤ TOL · max(1, max |numeric|). */
function compareGradient(t: any, label: string, numeric: Float64Array, analytic: Float64Array, at: readonly number[]) {
  let worst = 0, scale = 0, where = -1;
  at.forEach((i, k) => {
    const err = Math.abs(numeric[k] - analytic[i]);
    if (err > worst) { worst = err; where = i; }
    scale = Math.max(scale, Math.abs(numeric[k]));
  });
  t.true(worst <= TOL * Math.max(1, scale),
    `${label}: max |FD − analytic| = ${worst.toExponential(2)} at [${where}] (scale ${scale.toExponential(2)}, ${at.length} coords)`);
}

/** Compares an analytic gradient of the scalar f w.r.t. x with central differences at `at`. */
function gradcheck(t: any, label: string, f: () => number, x: Float64Array, analytic: Float64Array, at = coords(x.length)) {
  t.is(analytic.length, x.length, `${label}: gradient has the input's size`);
  compareGradient(t, label, fd(f, x, at), analytic, at);
}

/** FD check of a backward for L = Σ forward() ⊙ G, per input key → gradient key. */
function checkBackward(t: any, label: string, forward: () => Float64Array, G: Float64Array, inputs: Tensors,
  grads: Tensors, wrt: Record<string, string>, count = 40) {
  for (const [inKey, gradKey] of Object.entries(wrt))
    gradcheck(t, `${label} d/d${inKey}`, () => dot(forward(), G), inputs[inKey], grads[gradKey], coords(inputs[inKey].length, count));
}

// ---- matmul ------------------------------------------------------------------------------------

for (const [R, K, N] of [[7, 5, 6], [70, 4, 3], [1, 9, 1]]) {  // R = 70 crosses the 64-row chunks of dbias
  test(`matmul R=${R} K=${K} N=${N}: forward known answer (bias, residual), backward vs FD`, (t) => {
    const inputs = { inp: randn(R * K), weight: randn(N * K), bias: randn(N), residual: randn(R * N) };
    const out = op('matmul_forward', inputs, { R, K, N }).out;
    let worst = 0;
    for (let r = 0; r < R; r++)
      for (let n = 0; n < N; n++) {
        let s = inputs.bias[n] + inputs.residual[r * N + n];
        for (let k = 0; k < K; k++) s += inputs.inp[r * K + k] * inputs.weight[n * K + k];
        worst = Math.max(worst, Math.abs(out[r * N + n] - s));
      }
    t.true(worst < 1e-12, `forward error ${worst}`);
    const plain = op('matmul_forward', { inp: inputs.inp, weight: inputs.weight }, { R, K, N }).out;  // no bias/residual
    t.true(plain.every((v, i) => Math.abs(v + inputs.bias[i % N] + inputs.residual[i] - out[i]) < 1e-12));
    const G = randn(R * N);
    const g = op('matmul_backward', { dout: G, inp: inputs.inp, weight: inputs.weight }, { R, K, N });
    checkBackward(t, 'matmul', () => op('matmul_forward', inputs, { R, K, N }).out, G, inputs, g,
      { inp: 'dinp', weight: 'dweight', bias: 'dbias' });
    // the residual is added as is: its gradient is G itself
    gradcheck(t, 'matmul d/dresidual', () => dot(op('matmul_forward', inputs, { R, K, N }).out, G), inputs.residual, G);
  });
}

// ---- LayerNorm ----------------------------------------------------------------------------------

for (const [R, C] of [[4, 9], [67, 5]]) {  // R = 67 crosses the 64-row chunks of dweight/dbias
  test(`layernorm R=${R} C=${C}: backward vs FD`, (t) => {
    const eps = 1e-6;
    const inputs = { inp: randn(R * C, 2), weight: randn(C), bias: randn(C) };
    const fwd = op('layernorm_forward', inputs, { R, C, eps });
    const G = randn(R * C);
    const g = op('layernorm_backward', { dout: G, inp: inputs.inp, weight: inputs.weight, mean: fwd.mean, rstd: fwd.rstd }, { R, C });
    checkBackward(t, 'layernorm', () => op('layernorm_forward', inputs, { R, C, eps }).out, G, inputs, g,
      { inp: 'dinp', weight: 'dweight', bias: 'dbias' });
  });
}

test('layernorm: known rows (biased variance, eps inside the sqrt, affine)', (t) => {
  // [1, 2, 3, 4]: mean 2.5, biased variance 1.25
  const r = op('layernorm_forward', { inp: Float64Array.of(1, 2, 3, 4, 10, 10, 10, 14), weight: Float64Array.of(1, 2, -1, 0.5), bias: Float64Array.of(0, 1, 2, 3) },
    { R: 2, C: 4, eps: 1e-6 });
  const s0 = 1 / Math.sqrt(1.25 + 1e-6), s1 = 1 / Math.sqrt(3 + 1e-6);  // row 2: mean 11, var (1+1+1+9)/4 = 3
  const expected = [-1.5 * s0 * 1, -0.5 * s0 * 2 + 1, 0.5 * s0 * -1 + 2, 1.5 * s0 * 0.5 + 3,
    -1 * s1, -1 * s1 * 2 + 1, -1 * s1 * -1 + 2, 3 * s1 * 0.5 + 3];
  r.out.forEach((v, i) => t.true(Math.abs(v - expected[i]) < 1e-14, `out[${i}] = ${v}, expected ${expected[i]}`));
  t.deepEqual([...r.mean], [2.5, 11]);
  t.true(close(r.rstd[0], s0, 1e-15) && close(r.rstd[1], s1, 1e-15));
  // constant row: x̂ = 0, rstd = 1/√eps
  const c = op('layernorm_forward', { inp: Float64Array.of(5, 5, 5), weight: Float64Array.of(1, 1, 1), bias: Float64Array.of(7, 8, 9) }, { R: 1, C: 3, eps: 1e-6 });
  t.deepEqual([...c.out], [7, 8, 9]);
  t.true(close(c.rstd[0], 1000, 1e-12));
});

// ---- GELU ---------------------------------------------------------------------------------------

test('gelu: exact erf GELU known answers, derivative known answers, backward vs FD', (t) => {
  const pts = Float64Array.of(-3, -1, 0, 0.5, 1, 2, 6);
  // x·Φ(x), Φ from Python's math.erf
  const expected = [-0.00404969409489031, -0.15865525393145707, 0, 0.34573123063700656, 0.8413447460685429, 1.9544997361036416, 5.999999994080474];
  const out = op('gelu_forward', { inp: pts }, { n: pts.length }).out;
  out.forEach((v, i) => t.true(Math.abs(v - expected[i]) < 1e-14, `gelu(${pts[i]}) = ${v}, expected ${expected[i]}`));
  // tanh approximation would give gelu(1) = 0.8411919906082768: must be clearly distinguished
  t.true(Math.abs(out[4] - 0.8411919906082768) > 1e-4);
  // gelu'(x) = Φ(x) + x·φ(x): gelu'(0) = 0.5, gelu'(1) = 0.8413447460685429 + 0.24197072451914337
  const d = op('gelu_backward', { inp: Float64Array.of(0, 1, -1), dout: Float64Array.of(1, 1, 2) }, { n: 3 }).dinp;
  t.true(Math.abs(d[0] - 0.5) < 1e-15);
  t.true(Math.abs(d[1] - 1.0833154705876864) < 1e-14);
  t.true(Math.abs(d[2] - 2 * (0.15865525393145707 - 0.24197072451914337)) < 1e-14);
  const n = 60;
  const inputs = { inp: randn(n, 2) };
  const G = randn(n);
  const g = op('gelu_backward', { inp: inputs.inp, dout: G }, { n });
  checkBackward(t, 'gelu', () => op('gelu_forward', inputs, { n }).out, G, inputs, g, { inp: 'dinp' }, n);
});

// ---- attention ----------------------------------------------------------------------------------

/** Naive softmax(QKᵀ/√dh)V per (sequence, head) on qkv (S, T, 3, H, dh); also the log-sum-exp. */
function attentionReference(qkv: Float64Array, S: number, T: number, Hh: number, dh: number) {
  const D = Hh * dh, out = new Float64Array(S * T * D), lse = new Float64Array(S * Hh * T);
  for (let s = 0; s < S; s++)
    for (let h = 0; h < Hh; h++)
      for (let i = 0; i < T; i++) {
        const at = (tok: number, part: number, d: number) => qkv[(s * T + tok) * 3 * D + part * D + h * dh + d];
        const scores = Array.from({ length: T }, (_, j) => {
          let acc = 0;
          for (let d = 0; d < dh; d++) acc += at(i, 0, d) * at(j, 1, d);
          return acc / Math.sqrt(dh);
        });
        const mx = Math.max(...scores), e = scores.map((x) => Math.exp(x - mx)), sum = e.reduce((a, b) => a + b, 0);
        for (let d = 0; d < dh; d++) out[(s * T + i) * D + h * dh + d] = e.reduce((acc, w, j) => acc + (w / sum) * at(j, 2, d), 0);
        lse[(s * Hh + h) * T + i] = mx + Math.log(sum);
      }
  return { out, lse };
}

for (const [S, T, Hh, dh] of [[2, 5, 2, 3], [1, 1, 2, 4], [1, 9, 1, 8]]) {
  test(`attention S=${S} T=${T} H=${Hh} dh=${dh}: forward vs naive softmax(QKᵀ/√dh)V; backward vs FD`, (t) => {
    const D = Hh * dh;
    const inputs = { qkv: randn(S * T * 3 * D) };
    const dims = { S, T, H: Hh, dh };
    const fwd = op('attention_forward', inputs, dims);
    const ref = attentionReference(inputs.qkv, S, T, Hh, dh);
    t.true(relL2(fwd.out, ref.out) < 1e-13, `out ${relL2(fwd.out, ref.out)}`);
    t.true(relL2(fwd.lse, ref.lse) < 1e-13, `lse ${relL2(fwd.lse, ref.lse)}`);
    const G = randn(S * T * D);
    const g = op('attention_backward', { dout: G, qkv: inputs.qkv, out: fwd.out, lse: fwd.lse }, dims);
    checkBackward(t, 'attention', () => op('attention_forward', inputs, dims).out, G, inputs, g, { qkv: 'dqkv' }, 120);
  });
}

// ---- patches ------------------------------------------------------------------------------------

test('patchify_target (row, col, channel) vs gather_visible_patches (channel, row, col): 2×2 patch known answer', (t) => {
  const g = { batch: 1, parts: 1, visible: 1, patch: 2, channels: 2, image: 2 };
  // image [c][y][x] = 100·c + 10·y + x
  const images = Float64Array.from([0, 1, 10, 11, 100, 101, 110, 111]);
  t.deepEqual([...op('patchify_target', { images }, { ...g, normPix: 0 }).target], [0, 100, 1, 101, 10, 110, 11, 111]);
  t.deepEqual([...op('gather_visible_patches', { images, perm: Float64Array.of(0) }, g).cols], [0, 1, 10, 11, 100, 101, 110, 111]);
  // normPix: (x − mean) / sqrt(unbiased variance + 1e-6)
  const v = [0, 100, 1, 101, 10, 110, 11, 111], m = v.reduce((a, b) => a + b) / 8;
  const sd = Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / 7 + 1e-6);
  op('patchify_target', { images }, { ...g, normPix: 1 }).target.forEach((x, i) => t.true(Math.abs(x - (v[i] - m) / sd) < 1e-14));
});

test('patchify_target and gather_visible_patches: B=2, C=3, p=2, 8×8 vs a JS reference (normPix on/off, K<K_total)', (t) => {
  const B = 2, C = 3, p = 2, img = 8, grid = 4, N = 16, P = p * p * C, K = 3, V = 4;
  const g = { batch: B, parts: K, visible: V, patch: p, channels: C, image: img };
  const images = randn(B * C * img * img);
  const pix = (b: number, c: number, y: number, x: number) => images[((b * C + c) * img + y) * img + x];
  const perm = permutations(B, N);
  for (const normPix of [0, 1]) {
    const target = op('patchify_target', { images }, { ...g, normPix }).target;
    const expected: number[] = [];
    for (let b = 0; b < B; b++)
      for (let n = 0; n < N; n++) {
        const gy = Math.floor(n / grid), gx = n % grid, patch: number[] = [];
        for (let i = 0; i < p; i++) for (let j = 0; j < p; j++) for (let c = 0; c < C; c++) patch.push(pix(b, c, gy * p + i, gx * p + j));
        if (normPix) {
          const m = patch.reduce((a, x) => a + x, 0) / P;
          const varUnbiased = patch.reduce((a, x) => a + (x - m) ** 2, 0) / (P - 1);
          expected.push(...patch.map((x) => (x - m) / Math.sqrt(varUnbiased + 1e-6)));
        } else expected.push(...patch);
      }
    t.true(relL2(target, Float64Array.from(expected)) < 1e-14, `normPix ${normPix}`);
  }
  const cols = op('gather_visible_patches', { images, perm }, g).cols;
  const expected: number[] = [];
  for (let b = 0; b < B; b++)
    for (let kv = 0; kv < K * V; kv++) {  // part k's v-th visible patch = perm[b, k·V + v]
      const n = perm[b * N + kv], gy = Math.floor(n / grid), gx = n % grid;
      for (let c = 0; c < C; c++) for (let i = 0; i < p; i++) for (let j = 0; j < p; j++) expected.push(pix(b, c, gy * p + i, gx * p + j));
    }
  t.deepEqual([...cols], expected);
});

// ---- tokens -------------------------------------------------------------------------------------

const geometry = { batch: 2, parts: 3, visible: 4, patch: 2, channels: 3, image: 8 };  // N = 16, K_total = 4, K = 3

test('encoder tokens: cls + pos[0] first, visible embeddings + pos[1+n] in perm order; backward vs FD', (t) => {
  const g = geometry, D = 3, N = 16, V = g.visible, S = g.batch * g.parts;
  const perm = permutations(g.batch, N);
  const inputs = { emb: randn(S * V * D), cls: randn(D), pos: randn((1 + N) * D) };
  const x = op('encoder_tokens_forward', { ...inputs, perm }, { ...g, D }).x;
  t.is(x.length, S * (1 + V) * D);
  for (let bk = 0; bk < S; bk++) {
    const b = Math.floor(bk / g.parts), k = bk % g.parts;
    for (let d = 0; d < D; d++) t.is(x[bk * (1 + V) * D + d], inputs.cls[d] + inputs.pos[d]);
    for (let v = 0; v < V; v++) {
      const n = perm[b * N + k * V + v];
      for (let d = 0; d < D; d++) t.is(x[(bk * (1 + V) + 1 + v) * D + d], inputs.emb[(bk * V + v) * D + d] + inputs.pos[(1 + n) * D + d]);
    }
  }
  const G = randn(S * (1 + V) * D);
  const grads = op('encoder_tokens_backward', { dx: G, perm }, { ...g, D });
  checkBackward(t, 'encoder tokens', () => op('encoder_tokens_forward', { ...inputs, perm }, { ...g, D }).x, G, inputs, grads,
    { emb: 'demb', cls: 'dcls' }, 100);
});

test('decoder tokens: cls first, visible tokens at their patch, mask token elsewhere, + pos; backward vs FD', (t) => {
  const g = geometry, D = 2, N = 16, S = g.batch * g.parts, V = g.visible;
  const perm = permutations(g.batch, N);
  const inputs = { y: randn(S * (1 + V) * D), mask: randn(D), pos: randn((1 + N) * D) };
  const z = op('decoder_tokens_forward', { ...inputs, perm }, { ...g, D }).z;
  t.is(z.length, S * (1 + N) * D);
  for (let bk = 0; bk < S; bk++) {
    const b = Math.floor(bk / g.parts), k = bk % g.parts;
    for (let d = 0; d < D; d++) t.is(z[bk * (1 + N) * D + d], inputs.y[bk * (1 + V) * D + d] + inputs.pos[d]);
    const visible = new Map<number, number>();
    for (let v = 0; v < V; v++) visible.set(perm[b * N + k * V + v], v);
    for (let n = 0; n < N; n++)
      for (let d = 0; d < D; d++) {
        const v = visible.get(n);
        const src = v === undefined ? inputs.mask[d] : inputs.y[(bk * (1 + V) + 1 + v) * D + d];
        t.is(z[(bk * (1 + N) + 1 + n) * D + d], src + inputs.pos[(1 + n) * D + d]);
      }
  }
  const G = randn(S * (1 + N) * D);
  const grads = op('decoder_tokens_backward', { dz: G, perm }, { ...g, D });
  checkBackward(t, 'decoder tokens', () => op('decoder_tokens_forward', { ...inputs, perm }, { ...g, D }).z, G, inputs, grads,
    { y: 'dy', mask: 'dmask' }, 100);
});

// ---- loss ---------------------------------------------------------------------------------------

/**
 * Plain JS reference of DESIGN.md §1 on pred (B·K, 1+N, P) (row 0 of each part the cls row),
 * target (B, N, P) and perm (B, N); part k of image b sees perm[b, k·V .. (k+1)·V).
 *   L_rec = mean over (b, k, n masked in k) of mean_p (ŷ[b,k,n] − t[b,n])²
 *   L_con = mean over S = {(b, n, i ≠ j) : n masked in both i and j} of mean_p d(ŷ[b,i,n] − sg(ŷ[b,j,n]))
 * `frozen` supplies the second member of each pair (the stop-gradient): L_con as a function of
 * `pred` with `frozen` held fixed is the "first-member-only" objective whose gradient is what the
 * op's dpred must contain (times λ); with frozen = pred it is the value of L_con.
 */
function lossReference(pred: Float64Array, target: Float64Array, perm: Float64Array, geo: { B: number; K: number; V: number; N: number; P: number },
  l1: boolean, frozen: Float64Array = pred) {
  const { B, K, V, N, P } = geo;
  let rec = 0, recCount = 0, con = 0, pairs = 0;
  const row = (b: number, k: number, n: number) => ((b * K + k) * (1 + N) + 1 + n) * P;
  for (let b = 0; b < B; b++) {
    const position = new Map<number, number>();  // patch → its index in perm row b
    for (let i = 0; i < N; i++) position.set(perm[b * N + i], i);
    for (let n = 0; n < N; n++) {
      const visibleIn = Math.floor(position.get(n)! / V);  // the part that sees n (≥ K: none of the used ones)
      const masked = Array.from({ length: K }, (_, k) => k).filter((k) => k !== visibleIn);
      for (const k of masked) {
        let s = 0;
        for (let q = 0; q < P; q++) s += (pred[row(b, k, n) + q] - target[(b * N + n) * P + q]) ** 2;
        rec += s / P;
        recCount++;
      }
      for (const i of masked)
        for (const j of masked) {
          if (i === j) continue;
          let s = 0;
          for (let q = 0; q < P; q++) {
            const diff = pred[row(b, i, n) + q] - frozen[row(b, j, n) + q];
            s += l1 ? Math.abs(diff) : diff * diff;
          }
          con += s / P;
          pairs++;
        }
    }
  }
  return { recon: rec / recCount, consistency: pairs ? con / pairs : 0 };
}

for (const K of [1, 2, 3, 4])
  for (const l1 of [false, true])
    for (const normPix of [0, 1]) {
      test(`loss K=${K} of 4, ${l1 ? 'l1' : 'mse'}, normPix ${normPix}: vs JS reference; dpred vs FD (λ = 0 and λ > 0)`, (t) => {
        const B = 2, p = 2, C = 3, img = 8, N = 16, V = 4, P = p * p * C, S = B * K;
        const g = { batch: B, parts: K, visible: V, patch: p, channels: C, image: img };
        const geo = { B, K, V, N, P };
        const perm = permutations(B, N);
        const target = op('patchify_target', { images: randn(B * C * img * img) }, { ...g, normPix }).target;
        const pred = randn(S * (1 + N) * P);
        const run = (lambda: number) => op('loss', { pred, target, perm }, { ...g, lambda, l1: l1 ? 1 : 0 });
        const ref = lossReference(pred, target, perm, geo, l1);
        // random coordinates plus a few fixed ones in the cls rows (whose gradient must be 0)
        const at = [...coords(pred.length, 36), 0, P - 1, (1 + N) * P, (K * B - 1) * (1 + N) * P, pred.length - 1];

        // known answer: losses against the JS reference
        const lambda = 0.7;
        const r = run(lambda);
        t.true(close(r.recon[0], ref.recon, 1e-13), `recon ${r.recon[0]} vs ${ref.recon}`);
        t.true(close(r.consistency[0], ref.consistency, 1e-13), `consistency ${r.consistency[0]} vs ${ref.consistency}`);
        t.true(close(r.loss[0], ref.recon + lambda * ref.consistency, 1e-13), `loss ${r.loss[0]}`);
        if (K === 1) t.is(r.consistency[0], 0, 'K = 1: no pairs');
        else t.true(ref.consistency > 0);
        for (let bk = 0; bk < S; bk++) for (let q = 0; q < P; q++) t.is(r.dpred[bk * (1 + N) * P + q], 0, 'cls rows get no gradient');

        // (a) λ = 0: dpred is the gradient of recon (and the consistency value is still reported)
        const r0 = run(0);
        t.true(close(r0.consistency[0], ref.consistency, 1e-13));
        t.true(close(r0.loss[0], ref.recon, 1e-13));
        const fdRecon = fd(() => run(0).recon[0], pred, at);
        compareGradient(t, 'λ=0: dpred vs FD of the op\'s recon', fdRecon, r0.dpred, at);

        // (b) λ > 0: dpred = ∂L_rec + λ·∂L_con|sg, the second member of each pair held constant:
        // FD of the JS first-member-only objective with a frozen copy of pred as the second members
        const frozen = Float64Array.from(pred);
        const fdConSg = fd(() => lossReference(pred, target, perm, geo, l1, frozen).consistency, pred, at);
        compareGradient(t, 'λ>0: dpred vs FD(recon) + λ·FD(first-member-only L_con, JS)',
          fdRecon.map((v, k) => v + lambda * fdConSg[k]), r.dpred, at);
        // cross-check: every unordered pair appears as (i, j) and (j, i) and d is symmetric, so the
        // sg gradient is half the full one, i.e. dpred is also the true gradient of recon + (λ/2)·L_con
        gradcheck(t, 'λ>0: dpred vs FD of the op\'s recon + λ/2·consistency', () => {
          const v = run(lambda);
          return v.recon[0] + (lambda / 2) * v.consistency[0];
        }, pred, r.dpred, at);
        if (K >= 2) {
          // and (discriminating the above) not the gradient of the full loss
          const fdLoss = fd(() => run(lambda).loss[0], pred, at);
          const worst = Math.max(...at.map((i, k) => Math.abs(fdLoss[k] - r.dpred[i])));
          t.true(worst > 1e-4, `the stop-gradient makes dpred differ from ∂loss (max diff ${worst.toExponential(2)})`);
        }
      });
    }

test('loss: hand-checked values and dpred (B=1, K=2 of 4, 2×2 patches, one channel; mse and l1, sign(0) = 0)', (t) => {
  // image 4×4, p = 2 → N = 4, P = 4, V = 1. perm [2, 0, 3, 1]: part 0 sees patch 2, part 1 patch 0;
  // masked in part 0: {0, 1, 3}, in part 1: {1, 2, 3}, in both: {1, 3} → |S| = 2 patches × 2 ordered pairs.
  const g = { batch: 1, parts: 2, visible: 1, patch: 2, channels: 1, image: 4 };
  const N = 4, P = 4, perm = Float64Array.of(2, 0, 3, 1), target = new Float64Array(N * P).fill(0.5);
  const rowOf = (k: number, n: number) => (k * (1 + N) + 1 + n) * P;
  const make = (c0: number, c1: number) => {
    // masked rows hold c_k; cls and visible rows hold junk the loss must ignore
    const pred = new Float64Array(2 * (1 + N) * P);
    for (let k = 0; k < 2; k++) {
      pred.fill(k ? -100 : 100, k * (1 + N) * P, (k * (1 + N) + 1) * P);
      for (let n = 0; n < N; n++) pred.fill(n === (k ? 0 : 2) ? 50 : k ? c1 : c0, rowOf(k, n), rowOf(k, n) + P);
    }
    return pred;
  };
  const lambda = 0.5;
  const check = (label: string, c0: number, c1: number, l1: boolean, expect: { recon: number; consistency: number; rows: number[][] }) => {
    const r = op('loss', { pred: make(c0, c1), target, perm }, { ...g, lambda, l1: l1 ? 1 : 0 });
    t.true(close(r.recon[0], expect.recon, 1e-15), `${label}: recon ${r.recon[0]}, expected ${expect.recon}`);
    t.true(close(r.consistency[0], expect.consistency, 1e-15), `${label}: consistency ${r.consistency[0]}, expected ${expect.consistency}`);
    t.true(close(r.loss[0], expect.recon + lambda * expect.consistency, 1e-15), `${label}: loss ${r.loss[0]}`);
    // expect.rows[k][n] = dpred on every element of (part k, patch n); cls rows 0
    for (let k = 0; k < 2; k++) {
      for (let q = 0; q < P; q++) t.is(r.dpred[k * (1 + N) * P + q], 0, `${label}: cls row of part ${k}`);
      for (let n = 0; n < N; n++)
        for (let q = 0; q < P; q++)
          t.true(Math.abs(r.dpred[rowOf(k, n) + q] - expect.rows[k][n]) < 1e-16,
            `${label}: dpred[part ${k}, patch ${n}, ${q}] = ${r.dpred[rowOf(k, n) + q]}, expected ${expect.rows[k][n]}`);
    }
  };
  // c0 = 1, c1 = 3, t = 0.5: L_rec = (3·0.25 + 3·6.25) / 6 = 3.25; L_con mse = (1 − 3)² = 4, l1 = 2.
  // ∂L_rec/∂ŷ = 2(ŷ − t) / (P·6): 1/24 (part 0), 5/24 (part 1);
  // λ·∂L_con|sg: mse λ·2(c_i − c_j)/(P·|S|) = ∓0.125, l1 λ·sign(c_i − c_j)/(P·|S|) = ∓1/32, on patches 1 and 3 only.
  check('mse', 1, 3, false, { recon: 3.25, consistency: 4, rows: [[1 / 24, 1 / 24 - 0.125, 0, 1 / 24 - 0.125], [0, 5 / 24 + 0.125, 5 / 24, 5 / 24 + 0.125]] });
  check('l1', 1, 3, true, { recon: 3.25, consistency: 2, rows: [[1 / 24, 1 / 24 - 1 / 32, 0, 1 / 24 - 1 / 32], [0, 5 / 24 + 1 / 32, 5 / 24, 5 / 24 + 1 / 32]] });
  // equal predictions: |0| has gradient sign(0) = 0 (torch.abs), so only the recon part remains
  check('l1, equal parts', 1, 1, true, { recon: 0.25, consistency: 0, rows: [[1 / 24, 1 / 24, 0, 1 / 24], [0, 1 / 24, 1 / 24, 1 / 24]] });
});

// ---- AdamW --------------------------------------------------------------------------------------

test('adamw: one and two steps match torch.optim.AdamW (decay on and off)', (t) => {
  const n = 6, lr = 1e-2, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weightDecay = 0.1;
  const f = Math.fround;  // test_ops.cc passes the hyper-parameters as float (AdamWScalars)
  for (const decay of [0, 1]) {
    let param: Float64Array = randn(n), m: Float64Array = new Float64Array(n), v: Float64Array = new Float64Array(n);
    const torch = { p: Float64Array.from(param), m: new Float64Array(n), v: new Float64Array(n) };
    const exact = { p: Float64Array.from(param), m: new Float64Array(n), v: new Float64Array(n) };
    for (let step = 1; step <= 2; step++) {
      const grad = randn(n);
      const r = op('adamw', { param, grad, expAvg: m, expAvgSq: v }, { n, lr, beta1, beta2, eps, weightDecay, step, decay });
      // torch.optim.AdamW (single-tensor path): p *= 1 − lr·wd; m, v EMAs;
      // p −= lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps)
      for (const [ref, c] of [[torch, (x: number) => x], [exact, f]] as const) {
        const bc1 = c(1 - c(beta1) ** step), bc2s = c(Math.sqrt(1 - c(beta2) ** step));  // test_ops.cc: from the float betas
        for (let i = 0; i < n; i++) {
          if (decay) ref.p[i] -= c(lr) * c(weightDecay) * ref.p[i];
          ref.m[i] = c(beta1) * ref.m[i] + (1 - c(beta1)) * grad[i];
          ref.v[i] = c(beta2) * ref.v[i] + (1 - c(beta2)) * grad[i] * grad[i];
          ref.p[i] -= (c(lr) / bc1) * ref.m[i] / (Math.sqrt(ref.v[i]) / bc2s + c(eps));
        }
      }
      for (let i = 0; i < n; i++) {
        // with the float-rounded scalars the double instantiation is exact up to round-off
        t.true(close(r.param[i], exact.p[i], 1e-14) && close(r.expAvg[i], exact.m[i], 1e-14) && close(r.expAvgSq[i], exact.v[i], 1e-14),
          `decay ${decay} step ${step} [${i}] vs float-scalar reference`);
        // against torch's double-precision scalars: the float rounding of lr/betas is ~1e-8 relative
        t.true(close(r.param[i], torch.p[i], 1e-7), `decay ${decay} step ${step} [${i}]: ${r.param[i]} vs torch ${torch.p[i]}`);
      }
      if (step === 1) {  // first step without decay moves each parameter by ≈ lr·sign(g)
        for (let i = 0; i < n; i++) {
          const moved = r.param[i] - param[i] * (decay ? 1 - lr * weightDecay : 1);
          t.true(Math.abs(moved + lr * Math.sign(grad[i])) < 1e-6 * Math.max(1, Math.abs(param[i])), `step 1 moves by lr·sign(g) [${i}]`);
        }
      }
      param = r.param; m = r.expAvg; v = r.expAvgSq;
    }
  }
});

// ---- bad input ----------------------------------------------------------------------------------

test('testOp: bad input is a clear JS error', (t) => {
  t.throws(() => op('no_such_op', {}, {}), { instanceOf: RangeError, message: /unknown op 'no_such_op'/ });
  t.throws(() => op('gelu_forward', { inp: new Float64Array(3) }, { n: 4 }), { instanceOf: RangeError, message: /4 elements for inp but received 3/ });
  t.throws(() => op('matmul_forward', { inp: new Float64Array(6), weight: new Float64Array(5) }, { R: 2, K: 3, N: 2 }),
    { instanceOf: RangeError, message: /weight/ });
  t.throws(() => op('loss', { pred: new Float64Array(2 * 5 * 4), target: new Float64Array(4 * 4), perm: new Float64Array(3) },
    { batch: 1, parts: 2, visible: 2, patch: 2, channels: 1, image: 4, lambda: 1, l1: 0 }), { instanceOf: RangeError, message: /perm/ });
  t.throws(() => native().testOp('gelu_forward', { inp: new Float32Array(4) as any }, { n: 4 }), { instanceOf: TypeError, message: /Float64Array for inp/ });
  t.throws(() => native().testOp('gather_visible_patches', { images: new Float64Array(4), perm: Int32Array.of(0) as any },
    { batch: 1, parts: 1, visible: 1, patch: 2, channels: 1, image: 2 }), { instanceOf: TypeError, message: /perm/ });
  t.throws(() => native().testOp('gelu_forward', { inp: [1, 2] as any }, { n: 2 }), { instanceOf: TypeError, message: /inp/ });
  t.throws(() => op('gelu_forward', { inp: new Float64Array(4) }, {}), { instanceOf: TypeError, message: /number for n/ });
  t.throws(() => op('gelu_forward', { inp: new Float64Array(4) }, { n: 1.5 }), { instanceOf: RangeError, message: /integer/ });
  t.throws(() => native().testOp(42 as any, {}, {}), { instanceOf: TypeError });
  t.throws(() => native().testOp('gelu_forward', null as any, { n: 1 }), { instanceOf: TypeError, message: /tensors/ });
  t.throws(() => op('patchify_target', { images: new Float64Array(9) }, { batch: 1, parts: 1, visible: 1, patch: 2, channels: 1, image: 3, normPix: 0 }),
    { instanceOf: RangeError, message: /geometry/ });
});

test('testOp: a perm row that is not a permutation is a RangeError (never an out-of-bounds read)', (t) => {
  const g = { batch: 1, parts: 1, visible: 1, patch: 2, channels: 1, image: 4 };  // N = 4
  const images = new Float64Array(16);
  for (const bad of [[0, 1, 2, 4], [0, 1, 1, 3], [0, -1, 2, 3], [0, 1.5, 2, 3]])
    t.throws(() => native().testOp('gather_visible_patches', { images, perm: Float64Array.from(bad) }, g),
      { instanceOf: RangeError, message: /perm row 0 is not a permutation/ });
});

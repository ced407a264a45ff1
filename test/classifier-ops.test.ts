// Op-level tests of the fine-tuning ops (native/cpu/classifier_ops.cc, column_sum_accumulate in
// native/cpu/ops.cc; contracts in native/core/backend.h, "fine-tuning"; DESIGN.md §3b) through
// native().testOp on their float64 instantiation: known answers against JS references,
// finite-difference checks of every backward, the adjoint identity of the pooling pair, and bad
// input. Then the same ops through the float32 Backend entry (testBackendOp('cpu', …)) against the
// float64 results, so the parity entries of native/backend_ops.cc run on machines without a GPU.
//
// Tolerances. Known answers: the same float64 arithmetic up to summation order, so 1e-12 relative
// to max(1, |reference|). FD (as test/ops.test.ts): central differences with h = 1e-6 in float64
// carry ~1e-10·max(1, |L|) round-off, far below TOL = 1e-6; a wrong row, a missing 1/(T − 1) or
// 1/B, or a sign gives O(1e-2 .. 1). With logits near ±1e3 each perturbation is resolved to only
// ~1e3·ε/h ≈ 1e-7 relative, still 10× inside TOL. float32 Backend vs float64: fp32 rounding
// (ε = 6e-8) over sums of at most a few hundred terms, so 1e-6 relative L2.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { native } from '../lib/native.js';
import { dot, fdGradient, randn as randnFrom, relL2, sampleIndices, seededRng } from './helpers/numeric.js';

type Tensors = Record<string, Float64Array>;
type Dims = Record<string, number>;
const op = (name: string, tensors: Tensors, dims: Dims) => native().testOp(name, tensors, dims);

const rng = seededRng(20261201);
const randn = (n: number, scale = 1) => randnFrom(n, rng, scale);
/** All of 0..n−1 when n ≤ count, else `count` distinct random indices. */
const coords = (n: number, count = 40) => sampleIndices(n, count, rng);

const H = 1e-6, TOL = 1e-6, EXACT = 1e-12;

/** max |actual − expected| ≤ tol · max(1, max |expected|), elementwise. */
function near(t: any, label: string, actual: ArrayLike<number>, expected: ArrayLike<number>, tol = EXACT) {
  t.is(actual.length, expected.length, `${label}: length`);
  let worst = 0, scale = 0, where = -1;
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    if (!(err <= worst)) { worst = err; where = i; }  // NaN counts as worst
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  t.true(worst <= tol * Math.max(1, scale),
    `${label}: max error ${worst.toExponential(2)} at [${where}] (${actual[where]} vs ${expected[where]})`);
}

/** An analytic gradient of the scalar f w.r.t. x against central differences at `at`. */
function gradcheck(t: any, label: string, f: () => number, x: Float64Array, analytic: ArrayLike<number>, at = coords(x.length)) {
  t.is(analytic.length, x.length, `${label}: gradient has the input's size`);
  const numeric = fdGradient(f, x, at, H);
  let worst = 0, scale = 0, where = -1;
  at.forEach((i, k) => {
    const err = Math.abs(numeric[k] - analytic[i]);
    if (!(err <= worst)) { worst = err; where = i; }
    scale = Math.max(scale, Math.abs(numeric[k]));
  });
  t.true(worst <= TOL * Math.max(1, scale),
    `${label}: max |FD − analytic| = ${worst.toExponential(2)} at [${where}] (scale ${scale.toExponential(2)}, ${at.length} coords)`);
}

// ---- JS references (DESIGN.md §3b) ---------------------------------------------------------------

/** pooled (S, D): mean of x (S, T, D) over tokens 1..T−1 (the cls token 0 excluded), or token 0. */
function poolReference(x: Float64Array, S: number, T: number, D: number, mean: boolean): Float64Array {
  const out = new Float64Array(S * D);
  for (let s = 0; s < S; s++)
    for (let d = 0; d < D; d++) {
      if (!mean) { out[s * D + d] = x[s * T * D + d]; continue; }
      let sum = 0;
      for (let tok = 1; tok < T; tok++) sum += x[(s * T + tok) * D + d];
      out[s * D + d] = sum / (T - 1);
    }
  return out;
}

/** out (S, n) = (res or 0) + keep[s] · inp */
function rowScaleReference(inp: Float64Array, keep: Float64Array, S: number, n: number, res?: Float64Array): Float64Array {
  const out = new Float64Array(S * n);
  for (let s = 0; s < S; s++)
    for (let i = 0; i < n; i++) out[s * n + i] = (res ? res[s * n + i] : 0) + keep[s] * inp[s * n + i];
  return out;
}

/** Mean over rows of Σ_c t (lse − z), lse = max + log Σ exp(z − max); dlogits = (softmax − t) / B. */
function crossEntropyReference(logits: Float64Array, targets: Float64Array, B: number, C: number) {
  let loss = 0;
  const dlogits = new Float64Array(B * C);
  for (let b = 0; b < B; b++) {
    const z = logits.subarray(b * C, (b + 1) * C), y = targets.subarray(b * C, (b + 1) * C);
    const max = Math.max(...z);
    const lse = max + Math.log(z.reduce((s, v) => s + Math.exp(v - max), 0));
    for (let c = 0; c < C; c++) {
      loss += y[c] * (lse - z[c]);
      dlogits[b * C + c] = (Math.exp(z[c] - lse) - y[c]) / B;
    }
  }
  return { loss: loss / B, dlogits };
}

/** Rows of positive values summing to 1 (a softmax of random logits). */
function softTargets(B: number, C: number): Float64Array {
  const out = randn(B * C);
  for (let b = 0; b < B; b++) {
    const row = out.subarray(b * C, (b + 1) * C);
    row.forEach((v, i) => { row[i] = Math.exp(v); });
    const sum = row.reduce((s, v) => s + v, 0);
    row.forEach((v, i) => { row[i] = v / sum; });
  }
  return out;
}

/** (1 − s)·onehot(labels) + s / C per row: MAE's label smoothing (s = 0: one-hot). */
function smoothedTargets(labels: number[], C: number, s: number): Float64Array {
  const out = new Float64Array(labels.length * C).fill(s / C);
  labels.forEach((label, b) => { out[b * C + label] += 1 - s; });
  return out;
}

// ---- token pooling -------------------------------------------------------------------------------

for (const [S, T, D] of [[3, 5, 4], [2, 2, 1], [1, 17, 8]]) {  // T = 2: the mean is one token
  for (const mean of [true, false]) {
    const kind = mean ? 'mean (global pool)' : 'cls';
    test(`pool_tokens S=${S} T=${T} D=${D} ${kind}: forward known answer, adjoint identity, backward vs FD`, (t) => {
      const x = randn(S * T * D);
      for (let s = 0; s < S; s++)  // a large cls token: including it in the mean would be visible
        for (let d = 0; d < D; d++) x[s * T * D + d] = 1e3 + d;
      const dims = { S, T, D, mean: mean ? 1 : 0 };
      const forward = () => op('pool_tokens_forward', { x }, dims).pooled;
      near(t, 'pooled', forward(), poolReference(x, S, T, D, mean));

      // backward, known answer: dpooled / (T − 1) on tokens 1..T−1 and 0 on token 0 (mean), else
      // dpooled on token 0 and 0 elsewhere; every element assigned
      const g = randn(S * D);
      const dx = op('pool_tokens_backward', { dpooled: g }, dims).dx;
      const expected = new Float64Array(S * T * D);
      for (let s = 0; s < S; s++)
        for (let tok = 0; tok < T; tok++)
          for (let d = 0; d < D; d++)
            expected[(s * T + tok) * D + d] = mean ? (tok === 0 ? 0 : g[s * D + d] / (T - 1)) : (tok === 0 ? g[s * D + d] : 0);
      near(t, 'dx', dx, expected);

      // the backward is the adjoint of the (linear) forward: ⟨forward(x), g⟩ = ⟨x, backward(g)⟩
      const lhs = dot(forward(), g), rhs = dot(x, dx);
      t.true(Math.abs(lhs - rhs) <= EXACT * Math.max(1, Math.abs(lhs)), `adjoint: ${lhs} vs ${rhs}`);
      gradcheck(t, 'pool d/dx', () => dot(forward(), g), x, dx, coords(x.length, x.length));  // every coordinate, token 0 included
    });
  }
}

// ---- drop path: residual_scaled_forward and scale_rows ---------------------------------------------

// per-row factors as drop path makes them (0 dropped, 1/(1 − p) kept, p = 0.2 and 0.6) and plain ones
const keepFactors = Float64Array.of(0, 1.25, 1, 2.5, 0, -0.5);

for (const [S, n] of [[6, 7], [6, 1], [6, 130]]) {
  test(`residual_scaled_forward / scale_rows S=${S} n=${n}: known answers (factor 0 included), drop-path gradients vs FD`, (t) => {
    const keep = keepFactors.slice(0, S), res = randn(S * n), branch = randn(S * n);
    const out = op('residual_scaled_forward', { res, branch, keep }, { S, n }).out;
    near(t, 'residual_scaled_forward', out, rowScaleReference(branch, keep, S, n, res));
    // a dropped row (factor 0) is the residual exactly
    t.deepEqual([...out.subarray(0, n)], [...res.subarray(0, n)]);
    const scaled = op('scale_rows', { inp: branch, keep }, { S, n }).out;
    near(t, 'scale_rows', scaled, rowScaleReference(branch, keep, S, n));
    t.true(scaled.subarray(0, n).every((v) => v === 0), 'a dropped row is all zeros');

    // the drop-path pair: d/dbranch Σ residual_scaled_forward ⊙ G = scale_rows(G); d/dres = G
    const G = randn(S * n);
    const inputs = { res, branch, keep };
    const loss = () => dot(op('residual_scaled_forward', inputs, { S, n }).out, G);
    const dbranch = op('scale_rows', { inp: G, keep }, { S, n }).out;
    gradcheck(t, 'residual_scaled d/dbranch = scale_rows(G)', loss, branch, dbranch, coords(S * n, 60));
    gradcheck(t, 'residual_scaled d/dres = G', loss, res, G, coords(S * n, 60));
    // the factor multiplies its own row only: d/dkeep[s] = Σ_i branch[s, i] · G[s, i]
    const dkeep = Float64Array.from({ length: S }, (_, s) => dot(branch.subarray(s * n, (s + 1) * n), G.subarray(s * n, (s + 1) * n)));
    gradcheck(t, 'residual_scaled d/dkeep', loss, keep, dkeep);
    // scale_rows is its own adjoint (diagonal): d/dinp Σ scale_rows(inp) ⊙ G = scale_rows(G)
    gradcheck(t, 'scale_rows d/dinp', () => dot(op('scale_rows', { inp: branch, keep }, { S, n }).out, G), branch, dbranch, coords(S * n, 60));
  });
}

// ---- softmax cross-entropy -----------------------------------------------------------------------

test('cross_entropy: closed forms (uniform logits, C = 1, logits ±1e3), stable where a naive softmax overflows', (t) => {
  // equal logits, one-hot: loss = log C; dlogits = (1/C − onehot) / B
  for (const [B, C] of [[1, 10], [3, 1000]]) {
    const labels = Array.from({ length: B }, (_, b) => (7 * b) % C);
    const r = op('cross_entropy', { logits: new Float64Array(B * C).fill(2.5), targets: smoothedTargets(labels, C, 0) }, { B, C });
    t.true(Math.abs(r.loss[0] - Math.log(C)) <= EXACT * Math.log(C), `uniform B=${B} C=${C}: ${r.loss[0]} vs log C = ${Math.log(C)}`);
    const expected = Float64Array.from({ length: B * C }, (_, i) => (1 / C - (i % C === labels[Math.floor(i / C)] ? 1 : 0)) / B);
    near(t, `uniform B=${B} C=${C} dlogits`, r.dlogits, expected);
  }
  // one class: softmax is 1, loss 0, gradient 0
  const one = op('cross_entropy', { logits: Float64Array.of(123), targets: Float64Array.of(1) }, { B: 1, C: 1 });
  t.is(one.loss[0], 0);
  t.is(one.dlogits[0], 0);
  // logits ±1e3 (exp(1000) overflows float64): row 0 targets the largest logit (loss e^−1000 ≈ 0),
  // row 1 the middle one (loss 1000 + log(1 + e^−1000 + e^−2000) = 1000 in float64)
  const big = op('cross_entropy', { logits: Float64Array.of(1000, 0, -1000, 1000, 0, -1000), targets: Float64Array.of(1, 0, 0, 0, 1, 0) }, { B: 2, C: 3 });
  t.true(Math.abs(big.loss[0] - 500) <= EXACT * 500, `loss ${big.loss[0]}, expected (0 + 1000) / 2`);
  near(t, 'logits ±1e3 dlogits', big.dlogits, [0, 0, 0, 0.5, -0.5, 0]);
  t.true(big.dlogits.every(Number.isFinite));
  // adding a constant to a row changes nothing (the max is subtracted before exp)
  const B = 4, C = 9, logits = randn(B * C, 3), targets = softTargets(B, C);
  const base = op('cross_entropy', { logits, targets }, { B, C });
  const shifted = op('cross_entropy', { logits: logits.map((v, i) => v + (Math.floor(i / C) % 2 ? -1e3 : 1e3)), targets }, { B, C });
  t.true(Math.abs(shifted.loss[0] - base.loss[0]) <= 1e-12 * 1e3, `shift: ${shifted.loss[0]} vs ${base.loss[0]}`);
  near(t, 'shift dlogits', shifted.dlogits, base.dlogits, 1e-12 * 1e3);  // |z| ~ 1e3 costs 1e3·ε per element
});

for (const [B, C] of [[1, 2], [4, 10], [5, 37]]) {
  for (const [targetsKind, makeTargets] of [
    ['soft', () => softTargets(B, C)],
    ['one-hot', () => smoothedTargets(Array.from({ length: B }, (_, b) => (3 * b + 1) % C), C, 0)],
    ['smoothed 0.1', () => smoothedTargets(Array.from({ length: B }, (_, b) => (5 * b) % C), C, 0.1)],
  ] as const) {
    for (const [logitsKind, offset] of [['logits ~3', 0], ['logits ~±1e3', 1e3]] as const) {
      test(`cross_entropy B=${B} C=${C} ${targetsKind} targets, ${logitsKind}: value vs log-sum-exp reference, dlogits vs FD`, (t) => {
        const targets = makeTargets();
        const logits = randn(B * C, 3).map((v, i) => v + (Math.floor(i / C) % 2 ? -offset : offset));
        const r = op('cross_entropy', { logits, targets }, { B, C });
        const ref = crossEntropyReference(logits, targets, B, C);
        t.true(Number.isFinite(r.loss[0]) && Math.abs(r.loss[0] - ref.loss) <= EXACT * Math.max(1, Math.abs(ref.loss)) * (1 + offset),
          `loss ${r.loss[0]} vs reference ${ref.loss}`);
        near(t, 'dlogits vs reference', r.dlogits, ref.dlogits, EXACT * (1 + offset));
        // (softmax − t) / B sums to 0 in each row when t sums to 1
        for (let b = 0; b < B; b++) {
          const sum = r.dlogits.subarray(b * C, (b + 1) * C).reduce((s, v) => s + v, 0);
          t.true(Math.abs(sum) < 1e-12, `row ${b}: Σ dlogits = ${sum}`);
        }
        gradcheck(t, 'cross_entropy d/dlogits', () => op('cross_entropy', { logits, targets }, { B, C }).loss[0], logits, r.dlogits);
      });
    }
  }
}

// ---- column sum ----------------------------------------------------------------------------------

for (const [R, C] of [[1, 5], [63, 7], [64, 3], [65, 11], [200, 1], [0, 4]]) {  // R = 65, 200 cross the 64-row chunks
  test(`column_sum_accumulate R=${R} C=${C}: adds the column sums to dst`, (t) => {
    const src = randn(R * C), dst = randn(C);
    const out = op('column_sum_accumulate', { src, dst }, { R, C }).dst;
    const expected = Float64Array.from(dst, (v, c) => {
      let s = v;
      for (let r = 0; r < R; r++) s += src[r * C + c];
      return s;
    });
    near(t, 'dst + Σ rows', out, expected);
    // from zeros: the column sums alone (so dst is added to, not ignored or overwritten)
    const fromZero = op('column_sum_accumulate', { src, dst: new Float64Array(C) }, { R, C }).dst;
    near(t, 'Σ rows', fromZero, expected.map((v, c) => v - dst[c]));
    if (R > 0) t.notDeepEqual([...out], [...fromZero]);
  });
}

// ---- bad input -----------------------------------------------------------------------------------

test('testOp: bad input to the fine-tuning ops is a RangeError or TypeError naming the problem', (t) => {
  const x = new Float64Array(12);
  t.throws(() => op('pool_tokens_forward', { x: new Float64Array(4) }, { S: 1, T: 1, D: 4, mean: 1 }), { instanceOf: RangeError, message: /T >= 2/ });
  t.throws(() => op('pool_tokens_backward', { dpooled: new Float64Array(4) }, { S: 1, T: 1, D: 4, mean: 0 }), { instanceOf: RangeError, message: /T >= 2/ });
  t.throws(() => op('pool_tokens_forward', { x }, { S: 0, T: 3, D: 4, mean: 1 }), { instanceOf: RangeError, message: /S >= 1/ });
  t.throws(() => op('pool_tokens_forward', { x }, { S: 1, T: 3, D: 5, mean: 1 }), { instanceOf: RangeError, message: /15 elements for x but received 12/ });
  t.throws(() => op('pool_tokens_forward', { x }, { S: 1, T: -3, D: 4, mean: 1 }), { instanceOf: RangeError, message: /integer >= 0 for T/ });
  t.throws(() => op('pool_tokens_forward', { x }, { S: 1, T: 3, D: 4 }), { instanceOf: TypeError, message: /number for mean/ });
  t.throws(() => op('residual_scaled_forward', { res: x, branch: x, keep: new Float64Array(2) }, { S: 3, n: 4 }),
    { instanceOf: RangeError, message: /3 elements for keep/ });
  t.throws(() => op('residual_scaled_forward', { branch: x, keep: new Float64Array(3) }, { S: 3, n: 4 }), { instanceOf: TypeError, message: /res/ });
  t.throws(() => op('scale_rows', { inp: x, keep: new Float64Array(3) }, { S: 3, n: 5 }), { instanceOf: RangeError, message: /inp/ });
  t.throws(() => native().testOp('scale_rows', { inp: new Float32Array(12) as any, keep: new Float64Array(3) }, { S: 3, n: 4 }),
    { instanceOf: TypeError, message: /Float64Array for inp/ });
  t.throws(() => op('cross_entropy', { logits: x, targets: new Float64Array(10) }, { B: 3, C: 4 }), { instanceOf: RangeError, message: /targets/ });
  t.throws(() => op('cross_entropy', { logits: x, targets: x }, { B: 3, C: 4.5 }), { instanceOf: RangeError, message: /integer/ });
  t.throws(() => op('column_sum_accumulate', { src: x }, { R: 3, C: 4 }), { instanceOf: TypeError, message: /dst/ });
  t.throws(() => op('column_sum_accumulate', { src: x, dst: new Float64Array(3) }, { R: 3, C: 4 }), { instanceOf: RangeError, message: /dst/ });
});

// An empty row would read past the logits (the max of no elements); run in a child process so
// a crash fails this test instead of killing the test worker.
test('testOp: cross_entropy with C = 0 or B = 0 is a RangeError (not a crash, not NaN)', (t) => {
  const script = `
    import { native } from './lib/native.ts';
    for (const [B, C] of [[1, 0], [0, 3]]) {
      try {
        const r = native().testOp('cross_entropy', { logits: new Float64Array(B * C), targets: new Float64Array(B * C) }, { B, C });
        console.log('B=' + B + ' C=' + C + ': returned loss ' + r.loss[0]);
      } catch (e) {
        console.log('B=' + B + ' C=' + C + ': ' + e.constructor.name + ': ' + e.message);
      }
    }`;
  const child = spawnSync(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
  t.log(child.stdout.trim());
  t.is(child.signal, null, `the process died with ${child.signal}: ${child.stderr}`);
  t.is(child.status, 0, child.stderr);
  const lines = child.stdout.trim().split('\n');
  t.is(lines.length, 2);
  for (const line of lines) t.regex(line, /: RangeError: /);
});

// ---- the float32 Backend entry (testBackendOp, CPU backend) against float64 testOp ------------------

type Tensors32 = Record<string, Float32Array>;
const f32 = (a: Float64Array) => Float32Array.from(a);
const f64 = (a: Float32Array) => Float64Array.from(a);
const backend = (name: string, tensors: Tensors32, dims: Dims) => native().testBackendOp('cpu', name, tensors, dims);

/** Runs `name` on the CPU backend (fp32) and testOp (fp64, on the same fp32-rounded inputs). */
function against64(t: any, name: string, name64: string, tensors: Tensors32, dims: Dims, keys: string[], tol = 1e-6) {
  const r32 = backend(name, tensors, dims);
  const r64 = op(name64, Object.fromEntries(Object.entries(tensors).map(([k, v]) => [k, f64(v)])), dims);
  t.deepEqual(Object.keys(r32).sort(), [...keys].sort(), `${name}: outputs`);
  for (const key of keys) {
    const a = r32[key], b = r64[key];
    if (typeof a === 'number') {
      t.true(Math.abs(a - b[0]) <= tol * Math.max(1, Math.abs(b[0])), `${name}.${key}: ${a} vs ${b[0]}`);
    } else {
      t.true(a.every(Number.isFinite), `${name}.${key}: every element written and finite`);
      const err = relL2(a, b);
      t.true(err <= tol, `${name}.${key}: relative L2 ${err.toExponential(2)} > ${tol}`);
    }
  }
  return r32;
}

test('testBackendOp(cpu): the six fine-tuning ops in fp32 match the float64 testOp', (t) => {
  for (const [R, C] of [[1, 5], [65, 300], [130, 17]]) {
    const src = f32(randn(R * C)), dst = f32(randn(C));
    against64(t, 'column_sum_accumulate', 'column_sum_accumulate', { src, dst }, { R, C }, ['dst']);
  }
  for (const [S, T, D] of [[2, 2, 3], [3, 50, 64]])
    for (const mean of [0, 1]) {
      against64(t, 'pool_tokens_forward', 'pool_tokens_forward', { x: f32(randn(S * T * D)) }, { S, T, D, mean }, ['pooled']);
      against64(t, 'pool_tokens_backward', 'pool_tokens_backward', { dpooled: f32(randn(S * D)) }, { S, T, D, mean }, ['dx']);
    }
  for (const [S, n] of [[6, 1], [6, 1000]]) {
    const keep = f32(keepFactors.slice(0, S)), res = f32(randn(S * n)), branch = f32(randn(S * n));
    const plain = against64(t, 'residual_scaled_forward', 'residual_scaled_forward', { res, branch, keep }, { S, n }, ['out']);
    const scaled = against64(t, 'scale_rows', 'scale_rows', { inp: branch, keep }, { S, n }, ['out']);
    // out aliasing res (alias 1) or branch (alias 2, as core/blocks.cc calls it) gives the same bits
    const before = { res: res.slice(), branch: branch.slice() };
    for (const alias of [1, 2])
      t.deepEqual(backend('residual_scaled_forward', { res, branch, keep }, { S, n, alias }).out, plain.out, `alias ${alias}`);
    t.deepEqual(backend('scale_rows', { inp: branch, keep }, { S, n, alias: 1 }).out, scaled.out, 'scale_rows in place');
    t.deepEqual({ res, branch }, before, 'the in-place runs work on device copies, not the caller\'s arrays');
  }
  for (const [B, C, offset] of [[1, 1, 0], [8, 10, 0], [16, 1000, 0], [4, 37, 1e3]]) {
    const logits = f32(randn(B * C, 3).map((v, i) => v + (Math.floor(i / C) % 2 ? -offset : offset)));
    const targets = f32(softTargets(B, C));
    against64(t, 'cross_entropy', 'cross_entropy', { logits, targets }, { B, C }, ['dlogits', 'loss']);
  }
});

test('testBackendOp: bad input to the fine-tuning entries is a RangeError before any backend call', (t) => {
  const x = new Float32Array(12), keep = new Float32Array(3);
  t.throws(() => backend('pool_tokens_forward', { x: new Float32Array(4) }, { S: 1, T: 1, D: 4, mean: 1 }), { instanceOf: RangeError, message: /T >= 2/ });
  t.throws(() => backend('pool_tokens_forward', { x }, { S: 0, T: 3, D: 4, mean: 1 }), { instanceOf: RangeError, message: /S >= 1/ });
  t.throws(() => backend('pool_tokens_backward', { dpooled: new Float32Array(3) }, { S: 1, T: 3, D: 4, mean: 0 }), { instanceOf: RangeError, message: /dpooled/ });
  t.throws(() => backend('cross_entropy', { logits: new Float32Array(0), targets: new Float32Array(0) }, { B: 1, C: 0 }), { instanceOf: RangeError, message: /C >= 1/ });
  t.throws(() => backend('cross_entropy', { logits: new Float32Array(0), targets: new Float32Array(0) }, { B: 0, C: 3 }), { instanceOf: RangeError, message: /B >= 1/ });
  t.throws(() => backend('scale_rows', { inp: x, keep }, { S: 3, n: 4, alias: 2 }), { instanceOf: RangeError, message: /alias/ });
  t.throws(() => backend('residual_scaled_forward', { res: x, branch: x, keep }, { S: 3, n: 4, alias: 3 }), { instanceOf: RangeError, message: /alias/ });
  t.throws(() => backend('residual_scaled_forward', { res: x, branch: x, keep: new Float32Array(2) }, { S: 3, n: 4 }), { instanceOf: RangeError, message: /keep/ });
  t.throws(() => native().testBackendOp('cpu', 'column_sum_accumulate', { src: new Float64Array(12) as any }, { R: 3, C: 4 }),
    { instanceOf: TypeError, message: /Float32Array for src/ });
});

// The CPU's packed fp32 GEMM (the three transposition cases of a training step: forward NT with
// the bias/residual epilogue, dinp NN, dweight TN accumulate, plus the dbias column sum) and the
// fp32 paths of attention, LayerNorm and GELU (vectorized exp/erf approximations), each against
// the float64 instantiation of the same op (testOp with dims.fp32 = 1 vs without).
//
// Tolerance 1e-5 relative L2: the inputs are rounded to float (2^-24 ≈ 6e-8 relative) and a dot
// product of K ≤ 300 random terms accumulates round-off ~√K·2^-24 ≈ 1e-6 relative to its size;
// fast_exp (rel. error < 2e-7) and the A&S erf (abs. error < 1.5e-7) stay below that too. A wrong
// tile edge, a skipped/duplicated k block or a packing bug gives errors of O(1e-2 .. 1).
// Sizes come from {1, 7, 13, 33, 97, 255, 257, 300} and a few larger ones: they cross the
// kKC = 256 depth blocks, the kNC = 768 panels, both ways of splitting the work between threads
// (by rows with a shared B panel, by columns) and the MR (4/6/12) × NR (8/16/32) micro-kernel edges.
import test from 'ava';
import { native } from '../lib/native.js';
import { randn as randnFrom, relL2, seededRng } from './helpers/numeric.js';

const rng = seededRng(7);
const randn = (n: number, scale = 1) => randnFrom(n, rng, scale);
const TOL = 1e-5;

function both(name: string, tensors: Record<string, Float64Array>, dims: Record<string, number>) {
  return { f32: native().testOp(name, tensors, { ...dims, fp32: 1 }), f64: native().testOp(name, tensors, dims) };
}
function agree(t: any, label: string, r: ReturnType<typeof both>, keys: string[]) {
  for (const key of keys) {
    const e = relL2(r.f32[key], r.f64[key]);
    t.true(e <= TOL, `${label} ${key}: relative L2 ${e.toExponential(2)}`);
  }
}

const sizes = [
  [1, 1, 1], [1, 7, 13], [7, 13, 1], [13, 1, 7], [1, 300, 257], [257, 1, 300], [300, 257, 1],
  [33, 97, 255], [97, 257, 33], [255, 13, 300], [300, 255, 257], [257, 300, 97], [97, 97, 97],
  [257, 257, 257], [33, 255, 7], [255, 33, 97], [13, 300, 33], [7, 33, 300],
  // ≥ 384 rows: the threads share each packed B panel and split the rows (fewer rows: each
  // thread owns whole columns); N = 800 crosses the kNC = 768 panel width
  [1000, 40, 800], [777, 300, 33], [451, 513, 70], [400, 3, 5],
];

for (const [R, K, N] of sizes) {
  test(`GEMM fp32 vs fp64, R=${R} K=${K} N=${N}: forward (bias + residual, plain), dinp, dweight, dbias`, (t) => {
    const inp = randn(R * K), weight = randn(N * K);
    agree(t, 'forward', both('matmul_forward', { inp, weight, bias: randn(N), residual: randn(R * N) }, { R, K, N }), ['out']);
    agree(t, 'forward (no epilogue)', both('matmul_forward', { inp, weight }, { R, K, N }), ['out']);
    agree(t, 'backward', both('matmul_backward', { dout: randn(R * N), inp, weight }, { R, K, N }), ['dinp', 'dweight', 'dbias']);
  });
}

// The MLP's fused ops: GELU applied per finished GEMM tile (fp32) against matmul then GELU (fp64).
for (const [R, K, N] of [[1, 7, 13], [97, 33, 255], [300, 257, 97], [1000, 40, 800], [451, 513, 70]]) {
  test(`fused GEMM + GELU fp32 vs fp64 composition, R=${R} K=${K} N=${N}: forward (pre, act), backward`, (t) => {
    const inp = randn(R * K), weight = randn(N * K, 0.5);
    agree(t, 'forward', both('matmul_gelu_forward', { inp, weight, bias: randn(N) }, { R, K, N }), ['pre', 'act']);
    agree(t, 'backward', both('matmul_backward_gelu', { dout: randn(R * N), inp, weight, geluInp: randn(R * K, 2) }, { R, K, N }),
      ['dinp', 'dweight', 'dbias']);
  });
}

for (const [S, T, H, dh] of [[2, 17, 3, 8], [1, 65, 4, 32], [3, 1, 2, 5], [1, 50, 2, 64]]) {
  test(`attention fp32 vs fp64, S=${S} T=${T} H=${H} dh=${dh}: out, lse, dqkv`, (t) => {
    const qkv = randn(S * T * 3 * H * dh, 1.5);
    const f = both('attention_forward', { qkv }, { S, T, H, dh });
    agree(t, 'forward', f, ['out', 'lse']);
    const b = both('attention_backward', { qkv, dout: randn(S * T * H * dh), out: f.f64.out, lse: f.f64.lse }, { S, T, H, dh });
    agree(t, 'backward', b, ['dqkv']);
  });
}

test('layernorm fp32 vs fp64: forward and backward (rows cross the 64-row chunks)', (t) => {
  for (const [R, C] of [[50, 192], [130, 7], [1, 768]]) {
    const inp = randn(R * C, 3), weight = randn(C), bias = randn(C);
    const f = both('layernorm_forward', { inp, weight, bias }, { R, C, eps: 1e-6 });
    agree(t, `R=${R} C=${C} forward`, f, ['out', 'mean', 'rstd']);
    const b = both('layernorm_backward', { dout: randn(R * C), inp, weight, mean: f.f64.mean, rstd: f.f64.rstd }, { R, C });
    agree(t, `R=${R} C=${C} backward`, b, ['dinp', 'dweight', 'dbias']);
  }
});

test('gelu fp32 (A&S erf, fast exp) vs fp64: forward and backward', (t) => {
  for (const scale of [0.3, 3, 10]) {
    const n = 10_007, inp = randn(n, scale);
    agree(t, `scale ${scale} forward`, both('gelu_forward', { inp }, { n }), ['out']);
    agree(t, `scale ${scale} backward`, both('gelu_backward', { inp, dout: randn(n) }, { n }), ['dinp']);
  }
});

// The same two ops through the Backend interface (testBackendOp, what cuda-parity.test.ts runs on
// both backends): the fp32 CPU backend against the float64 testOp.
test('testBackendOp(cpu): the fused MLP ops (matmul_gelu_forward, matmul_backward_gelu) match the float64 ops', (t) => {
  const R = 97, K = 33, N = 70;
  const inp = randn(R * K), weight = randn(N * K, 0.5), bias = randn(N), dout = randn(R * N), geluInp = randn(R * K, 2);
  const f32 = (x: Float64Array) => Float32Array.from(x);
  const fwd = native().testBackendOp('cpu', 'matmul_gelu_forward', { inp: f32(inp), weight: f32(weight), bias: f32(bias) }, { R, K, N });
  const fwd64 = native().testOp('matmul_gelu_forward', { inp, weight, bias }, { R, K, N });
  for (const key of ['pre', 'act']) t.true(relL2(fwd[key], fwd64[key]) <= TOL, `forward ${key}: ${relL2(fwd[key], fwd64[key])}`);
  const bwd = native().testBackendOp('cpu', 'matmul_backward_gelu',
    { dout: f32(dout), inp: f32(inp), weight: f32(weight), geluInp: f32(geluInp) }, { R, K, N });
  const bwd64 = native().testOp('matmul_backward_gelu', { dout, inp, weight, geluInp }, { R, K, N });
  for (const key of ['dinp', 'dweight', 'dbias']) t.true(relL2(bwd[key], bwd64[key]) <= TOL, `backward ${key}: ${relL2(bwd[key], bwd64[key])}`);
  // assign: dweight's input is overwritten, dbias accumulates onto its input
  const stale = randn(N * K), db0 = randn(N);
  const assigned = native().testBackendOp('cpu', 'matmul_backward_gelu',
    { dout: f32(dout), inp: f32(inp), weight: f32(weight), geluInp: f32(geluInp), dweight: f32(stale), dbias: f32(db0) }, { R, K, N, assign: 1 });
  t.deepEqual(assigned.dweight, bwd.dweight);
  t.true(relL2(assigned.dbias, Float64Array.from(bwd64.dbias as Float64Array, (v, i) => v + db0[i])) <= TOL);
});

test('matmul_backward with assign overwrites dweight (the first write of a fresh step), dbias still adds', (t) => {
  const R = 97, K = 33, N = 40;
  const f32 = (n: number, scale = 1) => Float32Array.from(randn(n, scale));
  const dout = f32(R * N), inp = f32(R * K), weight = f32(N * K), stale = f32(N * K), dbias = f32(N);
  const assigned = native().testBackendOp('cpu', 'matmul_backward', { dout, inp, weight, dweight: stale, dbias }, { R, K, N, assign: 1 });
  const fromZero = native().testBackendOp('cpu', 'matmul_backward', { dout, inp, weight, dbias }, { R, K, N });
  const added = native().testBackendOp('cpu', 'matmul_backward', { dout, inp, weight, dweight: stale, dbias }, { R, K, N });
  t.deepEqual(assigned.dweight, fromZero.dweight, 'the stale input is ignored');
  t.deepEqual(assigned.dbias, added.dbias, 'dbias accumulates either way');
  t.true(relL2(added.dweight, fromZero.dweight) > 1e-3, 'without assign the stale values are added');
});

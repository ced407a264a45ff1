// The CPU's packed fp32 GEMM (all three transposition cases of a training step) and the fp32
// paths of attention, LayerNorm and GELU (vectorized exp/erf approximations) against the float64
// instantiation of the same ops. Tolerance 1e-5 relative L2: fp32 round-off over sums of up to
// ~300 products is ~1e-6; a wrong tile edge or a packing bug gives O(1).
import test from 'ava';
import { native } from '../lib/native.js';
import { relativeL2 } from './helpers/fixtures.js';
import { makeRandn } from './helpers/numeric.js';

const { randn } = makeRandn(7);
const TOL = 1e-5;

function both(name: string, tensors: Record<string, Float64Array>, dims: Record<string, number>) {
  return { f32: native().testOp(name, tensors, { ...dims, fp32: 1 }), f64: native().testOp(name, tensors, dims) };
}

const sizes = [[1, 7, 13], [13, 1, 7], [33, 97, 255], [97, 257, 33], [255, 13, 300], [300, 255, 257], [257, 300, 97]];

for (const [R, K, N] of sizes) {
  test(`GEMM R=${R} K=${K} N=${N}: forward (NT) with bias and residual, dinp (NN), dweight (TN), dbias`, (t) => {
    const f = both('matmul_forward', { inp: randn(R * K), weight: randn(N * K), bias: randn(N), residual: randn(R * N) }, { R, K, N });
    t.true(relativeL2(f.f32.out, f.f64.out) <= TOL, `out ${relativeL2(f.f32.out, f.f64.out)}`);
    const b = both('matmul_backward', { dout: randn(R * N), inp: randn(R * K), weight: randn(N * K) }, { R, K, N });
    for (const key of ['dinp', 'dweight', 'dbias'])
      t.true(relativeL2(b.f32[key], b.f64[key]) <= TOL, `${key} ${relativeL2(b.f32[key], b.f64[key])}`);
  });
}

test('fp32 attention, LayerNorm and GELU agree with float64', (t) => {
  for (const [S, T, H, dh] of [[2, 17, 3, 8], [1, 65, 4, 32]]) {
    const qkv = randn(S * T * 3 * H * dh);
    const f = both('attention_forward', { qkv }, { S, T, H, dh });
    t.true(relativeL2(f.f32.out, f.f64.out) <= TOL);
    const dout = randn(S * T * H * dh);
    const b = both('attention_backward', { qkv, dout, out: f.f64.out, lse: f.f64.lse }, { S, T, H, dh });
    t.true(relativeL2(b.f32.dqkv, b.f64.dqkv) <= TOL, `dqkv ${relativeL2(b.f32.dqkv, b.f64.dqkv)}`);
  }
  const R = 50, C = 192;
  const ln = both('layernorm_forward', { inp: randn(R * C, 3), weight: randn(C), bias: randn(C) }, { R, C, eps: 1e-6 });
  t.true(relativeL2(ln.f32.out, ln.f64.out) <= TOL);
  const n = 10_000, inp = randn(n, 3);
  const g = both('gelu_forward', { inp }, { n });
  t.true(relativeL2(g.f32.out, g.f64.out) <= TOL, `gelu ${relativeL2(g.f32.out, g.f64.out)}`);
  const gb = both('gelu_backward', { inp, dout: randn(n) }, { n });
  t.true(relativeL2(gb.f32.dinp, gb.f64.dinp) <= TOL, `gelu' ${relativeL2(gb.f32.dinp, gb.f64.dinp)}`);
});

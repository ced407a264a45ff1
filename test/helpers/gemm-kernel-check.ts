// Child process of cpu-kernels.test.ts: runs the GEMM op checks (fp32 vs the float64
// instantiation) under whatever EMAE_GEMM_KERNEL the parent set, prints one JSON line
// { kernel, worst, cases } with the worst relative L2 over every case and output.
import { native } from '../../lib/native.js';
import { randn as randnFrom, relL2, seededRng } from './numeric.js';

const rng = seededRng(5);
const randn = (n: number, scale = 1) => randnFrom(n, rng, scale);
let worst = 0, cases = 0;
function check(name: string, tensors: Record<string, Float64Array>, dims: Record<string, number>, keys: string[]) {
  const f32 = native().testOp(name, tensors, { ...dims, fp32: 1 }), f64 = native().testOp(name, tensors, dims);
  for (const key of keys) worst = Math.max(worst, relL2(f32[key], f64[key]));
  cases++;
}
for (const [R, K, N] of [[1, 7, 13], [13, 1, 7], [33, 97, 255], [300, 257, 97], [1000, 40, 800], [451, 513, 70]]) {
  const inp = randn(R * K), weight = randn(N * K);
  check('matmul_forward', { inp, weight, bias: randn(N), residual: randn(R * N) }, { R, K, N }, ['out']);
  check('matmul_backward', { dout: randn(R * N), inp, weight }, { R, K, N }, ['dinp', 'dweight', 'dbias']);
  check('matmul_gelu_forward', { inp, weight, bias: randn(N) }, { R, K, N }, ['pre', 'act']);
  check('matmul_backward_gelu', { dout: randn(R * N), inp, weight, geluInp: randn(R * K) }, { R, K, N }, ['dinp', 'dweight', 'dbias']);
}
console.log(JSON.stringify({ kernel: native().cpuGemmKernel(), worst, cases }));

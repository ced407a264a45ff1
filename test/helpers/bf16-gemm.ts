// gemm() with GemmParams::bf16 against the float64 triple loop on bf16-rounded operands (testOp
// 'gemm'), shared by bf16.test.ts and its child process bf16-kernel-check.ts.
import { native } from '../../lib/native.js';
import { relL2 } from './numeric.js';

// float → bf16 → float as the packers round: nearest even, denormals to zero
const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
export function bf16(x: number): number {
  f32[0] = x;
  const u = u32[0];
  u32[0] = (u & 0x7f800000) === 0 ? u & 0x80000000 : ((u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000) >>> 0;
  return f32[0];
}
export const round = (a: Float64Array) => a.map(bf16);

export interface GemmCase {
  M: number; N: number; K: number; transA: boolean; transB: boolean;
  pad: number;         // every leading dimension this much wider than its rows
  epilogue: boolean;   // accumulate into c, plus bias and residual
}

/**
 * Runs one case on the bf16 path and the float64 reference. Returns the relative L2 error over
 * the M × N outputs and whether the pad columns of C kept their values bit for bit.
 */
export function checkGemm(c: GemmCase, randn: (n: number, scale?: number) => Float64Array, threads = 0) {
  const { M, N, K, pad } = c;
  const lda = (c.transA ? M : K) + pad, ldb = (c.transB ? K : N) + pad, ldc = N + pad;
  const A = randn((c.transA ? K : M) * lda), B = randn((c.transB ? N : K) * ldb, 0.5);
  const fround = (a: Float64Array) => a.map(Math.fround);  // C's start values survive fp32 exactly
  const extra: Record<string, Float64Array> = c.epilogue
    ? { c: fround(randn(M * ldc)), bias: randn(N), residual: randn(M * ldc) }
    : { c: fround(randn(M * ldc)) };
  const dims = { M, N, K, pad, transA: +c.transA, transB: +c.transB, accumulate: +c.epilogue };
  const got = native().testOp('gemm', { A, B, ...extra }, { ...dims, fp32: 1, bf16: 1, threads }).out;
  const want = native().testOp('gemm', { A: round(A), B: round(B), ...extra }, dims).out;
  const body = (x: Float64Array) => Array.from({ length: M * N }, (_, e) => x[Math.floor(e / N) * ldc + (e % N)]);
  let padKept = true;
  for (let i = 0; i < M; i++)
    for (let j = N; j < ldc; j++) if (got[i * ldc + j] !== extra.c[i * ldc + j]) padKept = false;
  return { error: relL2(body(got), body(want)), padKept, out: got };
}

export const layouts = [[false, false], [false, true], [true, false], [true, true]] as const;

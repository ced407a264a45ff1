// Seeded random tensors and finite differences for the op tests.
import { seededUniform } from './synthetic.js';

export function makeRandn(seed: number) {
  const rand = seededUniform(seed);
  const randn = (n: number, scale = 1): Float64Array => Float64Array.from({ length: n }, () => {
    const u = Math.max(rand(), 1e-12), v = rand();
    return scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  });
  const permutations = (B: number, N: number): Float64Array => {
    const out = new Float64Array(B * N);
    for (let b = 0; b < B; b++) {
      const row = Array.from({ length: N }, (_, i) => i);
      for (let i = N - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [row[i], row[j]] = [row[j], row[i]];
      }
      out.set(row, b * N);
    }
    return out;
  };
  const pick = (n: number, count: number): number[] =>
    n <= count ? Array.from({ length: n }, (_, i) => i) : Array.from({ length: count }, () => Math.floor(rand() * n));
  return { rand, randn, permutations, pick };
}

export const dot = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};

/** Central difference of f at x[i] (x is modified and restored). */
export function centralDifference(f: () => number, x: Float64Array, i: number, h: number): number {
  const x0 = x[i];
  x[i] = x0 + h;
  const plus = f();
  x[i] = x0 - h;
  const minus = f();
  x[i] = x0;
  return (plus - minus) / (2 * h);
}

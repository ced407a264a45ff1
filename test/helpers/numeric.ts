// Seeded random tensors and finite differences for the op tests.
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';
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

// ---- seeded tensors, relative error and finite-difference gradients (op tests) -------------------

/** A seeded pure-rand generator (xoroshiro128plus; the distributions advance it in place). */
export type Rng = ReturnType<typeof xoroshiro128plus>;
export const seededRng = (seed: number): Rng => xoroshiro128plus(seed);

/** n standard-normal samples (Box–Muller) times `scale`, drawn from `rng`. */
export function randn(n: number, rng: Rng, scale = 1): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(uniformFloat64(rng), 1e-300), v = uniformFloat64(rng);
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

/** B rows, each a uniformly random permutation of 0..N−1 (Fisher–Yates), as a Float64Array. */
export function randomPermutations(B: number, N: number, rng: Rng): Float64Array {
  const out = new Float64Array(B * N);
  for (let b = 0; b < B; b++) {
    const row = Array.from({ length: N }, (_, i) => i);
    for (let i = N - 1; i > 0; i--) {
      const j = Math.floor(uniformFloat64(rng) * (i + 1));
      [row[i], row[j]] = [row[j], row[i]];
    }
    out.set(row, b * N);
  }
  return out;
}

/** All of 0..n−1 when n ≤ count, else `count` distinct random indices (ascending). */
export function sampleIndices(n: number, count: number, rng: Rng): number[] {
  if (n <= count) return Array.from({ length: n }, (_, i) => i);
  const s = new Set<number>();
  while (s.size < count) s.add(Math.floor(uniformFloat64(rng) * n));
  return [...s].sort((a, b) => a - b);
}

/** ‖a − b‖₂ / ‖b‖₂ with b the reference (‖a − b‖₂ when b is all zeros). */
export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`relL2: lengths differ (${a.length} vs ${b.length})`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
}

/**
 * Central differences (f(x + h·e_i) − f(x − h·e_i)) / 2h of the scalar f at each index i of
 * `indices` (x is perturbed in place and restored); result[k] belongs to indices[k].
 */
export function fdGradient(f: () => number, x: Float64Array, indices: readonly number[], h = 1e-6): Float64Array {
  return Float64Array.from(indices, (i) => centralDifference(f, x, i, h));
}

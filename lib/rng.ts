// Seeded random streams for the data and regularization draws: xoroshiro128+ (pure-rand) with its
// state hashed from (seed, stream).
import { xoroshiro128plusFromState } from 'pure-rand/generator/xoroshiro128plus';

export type Rng = ReturnType<typeof xoroshiro128plusFromState>;

/** murmur3's 32-bit finalizer: a bijection that mixes every input bit into every output bit. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) | 0;
}

/**
 * A xoroshiro128+ for (seed, stream), its state hashed from both (as the masker's per-sample
 * streams). Not pure-rand's `xoroshiro128plus(seed)`: that sets the state to (−1, ~seed, seed, 0),
 * whose first uniformFloat64 is ≈ 1 for every seed and whose second grows linearly with a small
 * seed, which would make the first decision of each call (mix or not, the first crop area) the
 * same for all seeds. `stream` keeps the draws of augmentBatch and Mixup.apply apart when a
 * caller gives both the same seed.
 */
export function seededRng(seed: number, stream: number): Rng {
  const a = fmix32(seed ^ 0x9e3779b9);
  const b = fmix32(stream ^ fmix32(a + 0x7f4a7c15));
  const c = fmix32(b + 0x6a09e667);
  const d = fmix32(a ^ b ^ c ^ 0x3c6ef372);
  return xoroshiro128plusFromState(a === 0 && b === 0 && c === 0 && d === 0 ? [0, 0, 0, 1] : [a, b, c, d]);
}

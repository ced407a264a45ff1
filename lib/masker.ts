// The parallel mask strategy (DESIGN §1): per image a random permutation `perm` of 0..N−1;
// part k < K sees the patches perm[k·V .. (k+1)·V) in that order and every other patch is masked
// in part k. Visible sets of different parts never overlap; with K = K_total every patch is
// visible in exactly one part.
//
// Permutations come from a seeded Fisher–Yates shuffle on xoroshiro128+ (pure-rand), so a seed
// fixes the whole mask stream, and getState()/setState() let a checkpoint resume it.
import { xoroshiro128plus, xoroshiro128plusFromState } from 'pure-rand/generator/xoroshiro128plus';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { fmix32 } from './rng.js';
import {
  assertFiniteNumber, assertNonNegativeInteger, assertObject, assertPositiveInteger,
  invalidRangeError, invalidTypeError, isInt32Array,
} from './errors.js';
import type { ResolvedConfig } from './config.js';

type Rng = ReturnType<typeof xoroshiro128plus>;

/** The most indices one call returns: 2^28 int32 (1 GiB), far beyond any batch a model can take. */
const MAX_INDICES = 2 ** 28;

function checkSize(batchSize: number, n: number): void {
  if (batchSize * n > MAX_INDICES) {
    throw invalidRangeError('batchSize', `at most ${Math.floor(MAX_INDICES / n)} (${n} patches each, ${MAX_INDICES} indices of 4 bytes in all)`,
      batchSize);
  }
}

/** Fills `row` with 0..n−1 shuffled by Fisher–Yates: position i takes a uniform pick among the n−i not yet placed. */
export function shuffledRange(row: Int32Array, rng: Parameters<typeof uniformInt>[0]): void {
  for (let i = 0; i < row.length; i++) row[i] = i;
  for (let i = row.length - 1; i > 0; i--) {
    const j = uniformInt(rng, 0, i);
    const t = row[i]; row[i] = row[j]; row[j] = t;
  }
}

export interface ParallelMaskerOptions {
  /** N, patches per image */
  numPatches: number;
  /** r in (0, 1); K_total = round(1/(1−r)). Give this or partsTotal (default 0.75). */
  maskRatio?: number;
  /** K_total directly. */
  partsTotal?: number;
  /** K, parts used, 1..K_total (default K_total). */
  parts?: number;
  /** uint32 seed of the mask stream (default 0). */
  seed?: number;
}

export class ParallelMasker {
  /** N */
  readonly numPatches: number;
  /** K_total */
  readonly partsTotal: number;
  /** K */
  readonly parts: number;
  /** V = N / K_total */
  readonly visiblePerPart: number;
  #rng: Rng;
  #seed: number;

  /**
   * @throws {TypeError} an option of the wrong type
   * @throws {RangeError} N not divisible by K_total, parts outside 1..K_total, a bad seed
   */
  constructor(options: ParallelMaskerOptions) {
    assertObject('options', options);
    const { numPatches, maskRatio, partsTotal, parts, seed = 0 } = options;
    assertPositiveInteger('numPatches', numPatches);
    let kTotal: number;
    if (partsTotal !== undefined) {
      assertPositiveInteger('partsTotal', partsTotal);
      kTotal = partsTotal;
      if (maskRatio !== undefined) {
        assertFiniteNumber('maskRatio', maskRatio, { above: 0, below: 1 });
        const fromRatio = Math.round(1 / (1 - maskRatio));
        if (fromRatio !== partsTotal) {
          throw new RangeError(`Expected partsTotal to match maskRatio but received partsTotal=${partsTotal}, ` +
            `maskRatio=${maskRatio} (round(1/(1-maskRatio)) = ${fromRatio})`);
        }
      }
    } else {
      const r = maskRatio ?? 0.75;
      assertFiniteNumber('maskRatio', r, { above: 0, below: 1 });
      kTotal = Math.round(1 / (1 - r));
    }
    if (numPatches % kTotal !== 0) {
      throw new RangeError(`N=${numPatches} patches do not split into K_total=${kTotal} parts`);
    }
    const k = parts ?? kTotal;
    assertPositiveInteger('parts', k);
    if (k > kTotal) throw invalidRangeError('parts', `integer in 1..K_total=${kTotal}`, k);
    if (typeof seed !== 'number') throw invalidTypeError('seed', 'integer in 0..4294967295 (uint32)', seed);
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
      throw invalidRangeError('seed', 'integer in 0..4294967295 (uint32)', seed);
    }
    this.numPatches = numPatches;
    this.partsTotal = kTotal;
    this.parts = k;
    this.visiblePerPart = numPatches / kTotal;
    this.#rng = xoroshiro128plus(seed | 0);
    this.#seed = seed;
  }

  /** A masker for a resolved model config (seed defaults to the config's). */
  static fromConfig(config: ResolvedConfig, seed: number = config.seed): ParallelMasker {
    return new ParallelMasker({ numPatches: config.numPatches, partsTotal: config.partsTotal, parts: config.parts, seed });
  }

  /** `batchSize` fresh permutations of 0..N−1, row-major: Int32Array [batchSize, N]. */
  next(batchSize: number): Int32Array {
    assertPositiveInteger('batchSize', batchSize);
    const n = this.numPatches;
    checkSize(batchSize, n);
    const out = new Int32Array(batchSize * n);
    for (let b = 0; b < batchSize; b++) shuffledRange(out.subarray(b * n, (b + 1) * n), this.#rng);
    return out;
  }

  /**
   * Permutations for the samples with global indices start .. start+batchSize−1: Int32Array
   * [batchSize, N]. Each row comes from its own generator seeded by (seed, index), so it depends
   * only on the sample's index — not on the calls before, the batch split or the rank — which is
   * what makes N ranks with batch B/N draw the masks of one rank with batch B (the Trainer
   * numbers samples by their place in the global stream). Independent of next()'s stream.
   * @throws {RangeError} start not a non-negative safe integer, batchSize not positive
   */
  forSamples(start: number, batchSize: number): Int32Array {
    assertNonNegativeInteger('start', start);
    if (!Number.isSafeInteger(start + batchSize)) throw invalidRangeError('start', 'safe integer index', start);
    assertPositiveInteger('batchSize', batchSize);
    const n = this.numPatches;
    checkSize(batchSize, n);
    const out = new Int32Array(batchSize * n);
    for (let b = 0; b < batchSize; b++)
      shuffledRange(out.subarray(b * n, (b + 1) * n), xoroshiro128plusFromState(sampleState(this.#seed, start + b)));
    return out;
  }

  /** The RNG state (4 int32), JSON-serializable, for checkpoints. */
  getState(): number[] {
    return [...this.#rng.getState()];
  }

  /** Resumes the mask stream from a state returned by getState(). */
  setState(state: readonly number[]): void {
    if (!Array.isArray(state)) throw invalidTypeError('state', 'array of 4 int32 (from getState())', state);
    if (state.length !== 4 || !state.every((v) => Number.isInteger(v) && v >= -0x80000000 && v <= 0x7fffffff)) {
      throw invalidRangeError('state', 'array of 4 int32 (from getState())', state);
    }
    this.#rng = xoroshiro128plusFromState(state);
  }

  /** Patches visible in part k of image b (this masker's N and V). */
  visibleIndices(perm: Int32Array, b: number, k: number): Int32Array {
    return ParallelMasker.visibleIndices(perm, this.numPatches, this.visiblePerPart, b, k);
  }

  /** Patches masked in part k of image b, ascending (this masker's N and V). */
  maskedIndices(perm: Int32Array, b: number, k: number): Int32Array {
    return ParallelMasker.maskedIndices(perm, this.numPatches, this.visiblePerPart, b, k);
  }

  /** Part in which each patch is visible, −1 for none (this masker's N, V and K). */
  partOf(perm: Int32Array): Int32Array {
    return ParallelMasker.partOf(perm, this.numPatches, this.visiblePerPart, this.parts);
  }

  /** perm[b·N + k·V .. b·N + (k+1)·V), a copy, in part order. */
  static visibleIndices(perm: Int32Array, numPatches: number, visiblePerPart: number, b: number, k: number): Int32Array {
    checkLayout(perm, numPatches, visiblePerPart);
    const batch = perm.length / numPatches;
    checkIndex('b', b, batch);
    checkIndex('k', k, numPatches / visiblePerPart);
    const start = b * numPatches + k * visiblePerPart;
    return perm.slice(start, start + visiblePerPart);
  }

  /** The patches of image b that part k does not see, ascending. */
  static maskedIndices(perm: Int32Array, numPatches: number, visiblePerPart: number, b: number, k: number): Int32Array {
    const visible = ParallelMasker.visibleIndices(perm, numPatches, visiblePerPart, b, k);
    const seen = new Uint8Array(numPatches);
    for (const n of visible) seen[n] = 1;
    const out = new Int32Array(numPatches - visiblePerPart);
    let j = 0;
    for (let n = 0; n < numPatches; n++) if (!seen[n]) out[j++] = n;
    return out;
  }

  /** Int32Array [B, N]: the part k < K in which patch n of image b is visible, −1 when in none. */
  static partOf(perm: Int32Array, numPatches: number, visiblePerPart: number, parts: number): Int32Array {
    checkLayout(perm, numPatches, visiblePerPart);
    assertPositiveInteger('parts', parts);
    if (parts * visiblePerPart > numPatches) {
      throw invalidRangeError('parts', `integer in 1..${numPatches / visiblePerPart}`, parts);
    }
    const out = new Int32Array(perm.length).fill(-1);
    const batch = perm.length / numPatches;
    for (let b = 0; b < batch; b++) {
      const base = b * numPatches;
      for (let k = 0; k < parts; k++) {
        for (let v = 0; v < visiblePerPart; v++) {
          const n = perm[base + k * visiblePerPart + v];
          if (n < 0 || n >= numPatches) {
            throw new RangeError(`permutation row ${b} is not a permutation of 0..${numPatches - 1}: ${n} is out of range`);
          }
          out[base + n] = k;
        }
      }
    }
    return out;
  }

  /** See {@link validatePermutation}. */
  static validatePermutation(perm: unknown, batchSize: number, numPatches: number): asserts perm is Int32Array {
    validatePermutation(perm, batchSize, numPatches);
  }
}

/**
 * Checks that `perm` is an Int32Array [batchSize, N] whose every row is a permutation of 0..N−1.
 * @throws {TypeError} not an Int32Array
 * @throws {RangeError} wrong length, or the first bad row ("permutation row 1 is not a
 *   permutation of 0..15: 3 appears twice")
 */
export function validatePermutation(perm: unknown, batchSize: number, numPatches: number): asserts perm is Int32Array {
  assertPositiveInteger('batchSize', batchSize);
  assertPositiveInteger('numPatches', numPatches);
  if (!isInt32Array(perm)) throw invalidTypeError('permutation', `Int32Array [batchSize, N] = [${batchSize}, ${numPatches}]`, perm);
  if (perm.length !== batchSize * numPatches) {
    throw new RangeError(`Expected permutation of length batchSize·N = ${batchSize}·${numPatches} = ` +
      `${batchSize * numPatches} but received length ${perm.length}`);
  }
  // seen[n] === row + 1 marks n as used in this row, so the array is never cleared
  const seen = new Int32Array(numPatches);
  for (let b = 0; b < batchSize; b++) {
    const base = b * numPatches;
    for (let i = 0; i < numPatches; i++) {
      const n = perm[base + i];
      if (n < 0 || n >= numPatches) {
        throw new RangeError(`permutation row ${b} is not a permutation of 0..${numPatches - 1}: ` +
          `${n} (at column ${i}) is out of range`);
      }
      if (seen[n] === b + 1) {
        throw new RangeError(`permutation row ${b} is not a permutation of 0..${numPatches - 1}: ${n} appears twice`);
      }
      seen[n] = b + 1;
    }
  }
}


// A xoroshiro128+ state (4 int32, never all zero) for sample `index` of the stream `seed`.
function sampleState(seed: number, index: number): number[] {
  const lo = index >>> 0, hi = Math.floor(index / 2 ** 32) >>> 0;
  const a = fmix32(seed ^ 0x9e3779b9);
  const b = fmix32(lo ^ fmix32(a + 0x7f4a7c15));
  const c = fmix32(hi ^ fmix32(b + 0x6a09e667));
  const d = fmix32(a ^ b ^ c ^ 0x3c6ef372);
  return a === 0 && b === 0 && c === 0 && d === 0 ? [0, 0, 0, 1] : [a, b, c, d];
}

function checkLayout(perm: Int32Array, numPatches: number, visiblePerPart: number): void {
  if (!isInt32Array(perm)) throw invalidTypeError('perm', 'Int32Array [B, N]', perm);
  assertPositiveInteger('numPatches', numPatches);
  assertPositiveInteger('visiblePerPart', visiblePerPart);
  if (numPatches % visiblePerPart !== 0) {
    throw new RangeError(`Expected visiblePerPart dividing numPatches but received visiblePerPart=${visiblePerPart}, ` +
      `numPatches=${numPatches}`);
  }
  if (perm.length % numPatches !== 0) {
    throw new RangeError(`Expected perm of length B·N (N=${numPatches}) but received length ${perm.length}`);
  }
}

function checkIndex(name: string, i: number, count: number): void {
  assertNonNegativeInteger(name, i);
  if (i >= count) throw invalidRangeError(name, `integer in 0..${count - 1}`, i);
}

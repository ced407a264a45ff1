// The data side of MAE fine-tuning (facebookresearch/mae `main_finetune.py`) for in-memory image
// sets: label smoothing, the training augmentation (crop and flip, RandAugment, random erasing)
// and timm's Mixup/CutMix in 'batch' mode (`timm/data/mixup.py`). Images are Float32Array [B, C, S, S] (square, already normalized),
// labels Int32Array [B], targets Float32Array [B, numClasses].
//
// Everything is seeded: each call takes a uint32 seed and draws from its own xoroshiro128+
// (pure-rand), so a (seed, input) pair always gives the same output and nothing carries state
// from one call to the next (a resumed run repeats its batches when the caller derives the seed
// from the step, as the Trainer does).
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import {
  assertFiniteNumber, assertKnownKeys, assertNonNegativeInteger, assertObject, assertPositiveInteger, invalidParameterError,
  invalidRangeError, invalidTypeError, isFloat32Array, isInt32Array,
} from './errors.js';
import type { Normalization } from './data.js';
import { randomResizedCropBox } from './folder.js';
import {
  RAND_INCREASING_TRANSFORMS, RAND_TRANSFORMS, LEVEL_DENOM, applyRandAugmentOp, isSignedOp, randAugmentArgument,
  type RandAugmentOp, type RandAugmentOptions,
} from './rand-augment.js';
import { seededRng, type Rng } from './rng.js';

export type { RandAugmentOp, RandAugmentOptions } from './rand-augment.js';

export type { Rng } from './rng.js';

/** A uniform draw in [0, 1). */
export type Uniform = () => number;


const AUGMENT_STREAM = 1, MIXUP_STREAM = 2, RAND_AUGMENT_STREAM = 3, ERASING_STREAM = 4;

// ---- argument checks ----------------------------------------------------------------------------

function assertSeed(seed: unknown): asserts seed is number {
  const expected = 'integer in 0..4294967295 (uint32)';
  if (typeof seed !== 'number') throw invalidTypeError('seed', expected, seed);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw invalidRangeError('seed', expected, seed);
}

/** images: Float32Array [count, channels, size, size]. */
function assertImages(images: unknown, count: unknown, countName: string, channels: unknown, size: unknown): asserts images is Float32Array {
  if (!isFloat32Array(images)) throw invalidTypeError('images', 'Float32Array', images);
  assertPositiveInteger(countName, count);
  assertPositiveInteger('channels', channels);
  assertPositiveInteger('size', size);
  const n = count * channels * size * size;
  if (images.length !== n) {
    throw invalidRangeError('images', `Float32Array of length ${countName}·channels·size·size = ${count}·${channels}·${size}·${size} = ${n}`, images);
  }
}

function assertSmoothing(name: string, smoothing: unknown): asserts smoothing is number {
  assertFiniteNumber(name, smoothing, { min: 0, max: 1 });
}

/** labels: Int32Array [count], each in 0..numClasses−1; a bad one is named by its index. */
function assertLabels(labels: unknown, numClasses: number, count?: number, countName?: string): asserts labels is Int32Array {
  if (!isInt32Array(labels)) throw invalidTypeError('labels', 'Int32Array', labels);
  if (count !== undefined && labels.length !== count) {
    throw invalidRangeError('labels', `Int32Array of length ${countName} = ${count}`, labels);
  }
  for (let i = 0; i < labels.length; i++) {
    const y = labels[i];
    if (y < 0 || y >= numClasses) throw invalidRangeError(`labels[${i}]`, `class index in 0..${numClasses - 1}`, y);
  }
}

/** A [lo, hi] option: two finite numbers within the bounds, lo ≤ hi. */
function assertInterval(name: string, v: unknown, bounds: { above?: number; max?: number }): asserts v is [number, number] {
  if (!Array.isArray(v)) throw invalidTypeError(name, 'array [min, max]', v);
  if (v.length !== 2) throw invalidRangeError(name, 'array [min, max]', v);
  assertFiniteNumber(`${name}[0]`, v[0], bounds);
  assertFiniteNumber(`${name}[1]`, v[1], bounds);
  if (v[0] > v[1]) throw new RangeError(`Expected ${name}[0] <= ${name}[1] but received [${v[0]}, ${v[1]}]`);
}

// ---- label smoothing ----------------------------------------------------------------------------

/**
 * Smoothed one-hot targets, Float32Array [B, numClasses]: row b is (1 − s)·onehot(labels[b]) +
 * s/numClasses, i.e. off = s/C and on = 1 − s + s/C — the target of timm's
 * LabelSmoothingCrossEntropy and of its Mixup (`mixup_target`).
 * @throws {TypeError} labels not an Int32Array, a number of the wrong type
 * @throws {RangeError} numClasses not a positive integer, smoothing outside [0, 1], a label
 *   outside 0..numClasses−1 (named by its index: "labels[3]")
 */
export function smoothOneHot(labels: Int32Array, numClasses: number, smoothing: number): Float32Array {
  assertPositiveInteger('numClasses', numClasses);
  assertSmoothing('smoothing', smoothing);
  assertLabels(labels, numClasses);
  return smoothedRows(labels, numClasses, smoothing, 1);
}

/** lam·smooth(y) + (1 − lam)·smooth(y.flip(0)), in double, stored as float (timm's mixup_target). */
function smoothedRows(labels: Int32Array, numClasses: number, smoothing: number, lam: number): Float32Array {
  const B = labels.length, off = smoothing / numClasses, on = 1 - smoothing + off;
  const out = new Float32Array(B * numClasses);
  for (let b = 0; b < B; b++) {
    const row = b * numClasses, mine = labels[b], theirs = labels[B - 1 - b];
    for (let k = 0; k < numClasses; k++)
      out[row + k] = lam * (k === mine ? on : off) + (1 - lam) * (k === theirs ? on : off);
  }
  return out;
}

// ---- fine-tuning augmentation -------------------------------------------------------------------

export interface AugmentOptions {
  /** RandomResizedCrop area fraction [min, max], 0 < min ≤ max ≤ 1 (default [0.08, 1], timm's) */
  scale?: readonly [number, number];
  /** RandomResizedCrop aspect ratio [min, max], 0 < min ≤ max (default [3/4, 4/3]) */
  ratio?: readonly [number, number];
  /** probability of a horizontal flip, in [0, 1] (default 0.5) */
  hflip?: number;
}

const AUGMENT_KEYS = ['scale', 'ratio', 'hflip'] as const;

/**
 * MAE's fine-tuning train transform (timm `create_transform(is_training=True)` as
 * `main_finetune.py` builds it) on a batch of normalized images [count, C, size, size]: per image
 * a RandomResizedCrop back to size × size (the box from `randomResizedCropBox`, torchvision's
 * algorithm), then a horizontal flip with probability `hflip`. Returns a new array; `images` is
 * not modified.
 *
 * RandAugment (`rand-m9-mstd0.5-inc1`) and random erasing (`reprob 0.25`), which MAE's recipe
 * adds, are `randAugment` and `randomErasing` below, applied after this one.
 *
 * Resampling is bilinear (half-pixel centres, edges clamped, as PyTorch's `align_corners=False`)
 * where torchvision uses bicubic: on 32-px images the upsampling factors are large and bicubic
 * overshoots. Bilinear weights are ≥ 0 and sum to 1, so cropping after normalization equals
 * normalizing after cropping. A crop covering the whole image is copied exactly.
 *
 * The draws for image i (4 or more for the box, 1 for the flip) follow those of image i − 1 on
 * one xoroshiro128+ whose state is hashed from `seed`.
 * @throws {TypeError} images not a Float32Array, an option of the wrong type, an unknown option
 * @throws {RangeError} a non-positive count/channels/size, images.length ≠ count·C·size²,
 *   a bad seed, scale outside (0, 1] or ratio ≤ 0 or min > max, hflip outside [0, 1]
 */
export function augmentBatch(images: Float32Array, count: number, channels: number, size: number, seed: number,
  options: AugmentOptions = {}): Float32Array {
  assertImages(images, count, 'count', channels, size);
  assertSeed(seed);
  assertObject('options', options);
  assertKnownKeys('augmentBatch option', options as Record<string, unknown>, AUGMENT_KEYS);
  const scale = options.scale ?? [0.08, 1];
  const ratio = options.ratio ?? [3 / 4, 4 / 3];
  const hflip = options.hflip ?? 0.5;
  assertInterval('options.scale', scale, { above: 0, max: 1 });
  assertInterval('options.ratio', ratio, { above: 0 });
  assertFiniteNumber('options.hflip', hflip, { min: 0, max: 1 });

  const rng = seededRng(seed, AUGMENT_STREAM);
  const rand: Uniform = () => uniformFloat64(rng);
  const S = size, plane = S * S, out = new Float32Array(images.length);
  // per output row/column: the two source rows/columns and the weight of the second
  const y0 = new Int32Array(S), y1 = new Int32Array(S), wy = new Float64Array(S);
  const x0 = new Int32Array(S), x1 = new Int32Array(S), wx = new Float64Array(S);
  for (let i = 0; i < count; i++) {
    const box = randomResizedCropBox(S, S, scale, ratio, rand);
    const flip = rand() < hflip;
    sourceTaps(box.top, box.height, S, y0, y1, wy);
    sourceTaps(box.left, box.width, S, x0, x1, wx);
    for (let c = 0; c < channels; c++) {
      const src = (i * channels + c) * plane;
      for (let y = 0; y < S; y++) {
        const r0 = src + y0[y] * S, r1 = src + y1[y] * S, v = wy[y], dst = src + y * S;
        for (let x = 0; x < S; x++) {
          const top = lerp(images[r0 + x0[x]], images[r0 + x1[x]], wx[x]);
          const bottom = lerp(images[r1 + x0[x]], images[r1 + x1[x]], wx[x]);
          out[dst + (flip ? S - 1 - x : x)] = lerp(top, bottom, v);
        }
      }
    }
  }
  return out;
}

/**
 * Bilinear taps for resizing the span [start, start + length) to `out` pixels, PyTorch's
 * align_corners=False: source coordinate (o + ½)·length/out − ½, clamped at 0 below and at the
 * last pixel above. A span of `out` pixels maps each pixel to itself with weight 0.
 */
function sourceTaps(start: number, length: number, out: number, i0: Int32Array, i1: Int32Array, w: Float64Array): void {
  const step = length / out;
  for (let o = 0; o < out; o++) {
    const s = Math.max(0, (o + 0.5) * step - 0.5);
    const lo = Math.min(Math.floor(s), length - 1);
    i0[o] = start + lo;
    i1[o] = start + Math.min(lo + 1, length - 1);
    w[o] = s - lo;
  }
}

/** a + (b − a)·w; exactly a when w = 0 (even when b is not finite). */
function lerp(a: number, b: number, w: number): number {
  return w === 0 ? a : a + (b - a) * w;
}

// ---- RandAugment -------------------------------------------------------------------------------

const RAND_AUGMENT_KEYS = ['ops', 'magnitude', 'magnitudeStd', 'increasing'] as const;

/**
 * RandAugment's options checked, MAE's recipe filling what is left out. Exported for FineTuner,
 * which checks them when it is built.
 * @throws {TypeError | RangeError} options not an object, an unknown key, ops not a non-negative
 *   integer, magnitude not a finite number ≥ 0, magnitudeStd not ≥ 0 (Infinity allowed), increasing not boolean
 */
export function randAugmentSettings(options: unknown): Required<RandAugmentOptions> {
  assertObject('randAugment', options);
  assertKnownKeys('randAugment option', options, RAND_AUGMENT_KEYS);
  const o = options as RandAugmentOptions;
  const r = { ops: o.ops ?? 2, magnitude: o.magnitude ?? 9, magnitudeStd: o.magnitudeStd ?? 0.5, increasing: o.increasing ?? true };
  assertNonNegativeInteger('randAugment.ops', r.ops);
  assertFiniteNumber('randAugment.magnitude', r.magnitude, { min: 0 });
  if (r.magnitudeStd !== Infinity) assertFiniteNumber('randAugment.magnitudeStd', r.magnitudeStd, { min: 0 }, 'number >= 0 or Infinity');
  if (typeof r.increasing !== 'boolean') throw invalidTypeError('randAugment.increasing', 'boolean', r.increasing);
  return r;
}

/** mean and std of `channels` channels, std > 0: how the images were normalized (exported for FineTuner). */
export function assertNormalization(normalization: unknown, channels: number): asserts normalization is Normalization {
  assertObject('normalization', normalization, 'object { mean, std }');
  const n = normalization as { mean?: unknown; std?: unknown };
  for (const key of ['mean', 'std'] as const) {
    const v = n[key];
    if (!Array.isArray(v)) throw invalidTypeError(`normalization.${key}`, `array of ${channels} numbers`, v);
    if (v.length !== channels) throw invalidRangeError(`normalization.${key}`, `array of ${channels} numbers (one a channel)`, v);
    v.forEach((x, c) => assertFiniteNumber(`normalization.${key}[${c}]`, x, key === 'std' ? { above: 0 } : {}));
  }
}

/** One op RandAugment applied to an image: its name, the magnitude drawn and the argument it gave. */
export interface AppliedOp {
  op: RandAugmentOp;
  magnitude: number;
  /** randAugmentArgument's value (degrees, factor, bits, …); undefined for the ops without one */
  argument: number | undefined;
}

export interface RandAugmentResult {
  /** the augmented batch, a new Float32Array [count, C, S, S], normalized as the input */
  images: Float32Array;
  /** per image, the ops applied in order (those drawn and then skipped by their ½ are not listed) */
  applied: AppliedOp[][];
}

/** A standard normal draw (Box–Muller, the cosine half) from two uniforms. */
function normal(rand: Uniform): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

/**
 * timm's RandAugment (`rand_augment_transform`, as MAE's `--aa rand-m9-mstd0.5-inc1` builds it)
 * on a batch of normalized images [count, C, size, size], C = 1 or 3. Per image: `ops` ops drawn
 * uniformly with replacement from timm's 15 (the increasing set with `increasing`, else the plain
 * one); each is applied with probability ½, at a magnitude drawn N(magnitude, magnitudeStd)
 * (uniform in [0, magnitude] when magnitudeStd is Infinity) and clipped to [0, 10], with a random
 * sign for the signed ops (`randAugmentArgument`). An image with an op to apply is un-normalized
 * with `normalization` to the 8-bit scale (x·std + mean)·255, clipped to [0, 255] as a uint8 image
 * is, the ops run on it in order (`applyRandAugmentOp`: what is quantized, how geometric ops
 * resample), and the result normalized back, (v/255 − mean)/std; the fill of the geometric ops is
 * timm's `img_mean`, round(255·mean) per channel. An image with no op applied is copied bitwise.
 *
 * In timm this runs on the PIL image after crop and flip and before ToTensor + Normalize; the
 * result is the same up to the float rounding of the round trip. Draws: for image i, the op
 * choices, then per op its ½, magnitude noise and sign, after those of image i − 1, on one
 * xoroshiro128+ hashed from (seed, its own stream). Returns a new array; `images` is not modified.
 * @throws {TypeError} images not a Float32Array, an option or normalization of the wrong type, an unknown option
 * @throws {RangeError} a non-positive count/size, channels not 1 or 3, a length that does not
 *   match, a bad seed, a bad option value, normalization not of C channels or std ≤ 0
 */
export function randAugment(images: Float32Array, count: number, channels: number, size: number,
  options: RandAugmentOptions, seed: number, normalization: Normalization): RandAugmentResult {
  assertImages(images, count, 'count', channels, size);
  if (channels !== 1 && channels !== 3) throw invalidRangeError('channels', '1 or 3 (RandAugment\'s colour ops work on grey or RGB images)', channels);
  const o = randAugmentSettings(options);
  assertSeed(seed);
  assertNormalization(normalization, channels);

  const rng = seededRng(seed, RAND_AUGMENT_STREAM);
  const rand: Uniform = () => uniformFloat64(rng);
  const set: readonly RandAugmentOp[] = o.increasing ? RAND_INCREASING_TRANSFORMS : RAND_TRANSFORMS;
  const { mean, std } = normalization;
  const fill = mean.map((m) => Math.min(255, Math.round(255 * m)));
  const per = channels * size * size, plane = size * size;
  const out = new Float32Array(images.length), applied: AppliedOp[][] = [];
  for (let i = 0; i < count; i++) {
    const chosen = Array.from({ length: o.ops }, () => set[uniformInt(rng, 0, set.length - 1)]);
    const mine: AppliedOp[] = [];
    for (const op of chosen) {
      if (rand() > 0.5) continue;  // timm's AugmentOp: skipped when random() > prob
      let m = o.magnitude;
      if (o.magnitudeStd === Infinity) m = rand() * o.magnitude;
      else if (o.magnitudeStd > 0) m += o.magnitudeStd * normal(rand);
      m = Math.max(0, Math.min(m, LEVEL_DENOM));
      const negate = isSignedOp(op) && rand() > 0.5;
      mine.push({ op, magnitude: m, argument: randAugmentArgument(op, m, negate) });
    }
    applied.push(mine);
    const src = images.subarray(i * per, (i + 1) * per);
    if (mine.length === 0) {
      out.set(src, i * per);
      continue;
    }
    let px: Float64Array = new Float64Array(per);
    for (let c = 0; c < channels; c++)
      for (let j = 0; j < plane; j++) {
        const v = (src[c * plane + j] * std[c] + mean[c]) * 255;
        px[c * plane + j] = v < 0 ? 0 : v > 255 ? 255 : v;
      }
    for (const a of mine) px = applyRandAugmentOp(a.op, px, channels, size, a.argument, fill);
    for (let c = 0; c < channels; c++)
      for (let j = 0; j < plane; j++) out[i * per + c * plane + j] = (px[c * plane + j] / 255 - mean[c]) / std[c];
  }
  return { images: out, applied };
}

// ---- random erasing -----------------------------------------------------------------------------

export interface RandomErasingOptions {
  /** probability that an image is erased, in [0, 1] (default 0.25, MAE's `--reprob`) */
  probability?: number;
  /**
   * what fills a rectangle (default 'pixel', MAE's `--remode`): 'pixel' a standard normal value
   * per pixel and channel, 'rand' one normal value per channel, 'const' zeros
   */
  mode?: 'pixel' | 'rand' | 'const';
  /** rectangles per erased image: 1, or uniform in 1..count (default 1, MAE's `--recount`) */
  count?: number;
}

const ERASING_KEYS = ['probability', 'mode', 'count'] as const;
const ERASING_MODES = ['pixel', 'rand', 'const'] as const;

/** Random erasing's options checked, MAE's recipe filling what is left out (exported for FineTuner). */
export function randomErasingSettings(options: unknown): Required<RandomErasingOptions> {
  assertObject('randomErasing', options);
  assertKnownKeys('randomErasing option', options, ERASING_KEYS);
  const o = options as RandomErasingOptions;
  const r = { probability: o.probability ?? 0.25, mode: o.mode ?? 'pixel', count: o.count ?? 1 };
  assertFiniteNumber('randomErasing.probability', r.probability, { min: 0, max: 1 });
  if (!ERASING_MODES.includes(r.mode)) throw invalidParameterError('randomErasing.mode', "'pixel', 'rand' or 'const'", r.mode, 'string');
  assertPositiveInteger('randomErasing.count', r.count);
  return r;
}

export interface RandomErasingResult {
  /** the batch with its rectangles erased, a new Float32Array [count, C, S, S] */
  images: Float32Array;
  /** per image, the rectangles erased (none for an image not erased, or whose 10 attempts all failed) */
  boxes: MixBox[][];
}

/** Python's round(): halves to even (timm's int(round(·)) of the rectangle's sides). */
function roundHalfEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * timm's `RandomErasing` (`timm/data/random_erasing.py`; Zhong et al. 2017), as MAE applies it
 * after normalization: each image, with probability `probability`, gets `count` rectangles
 * (count > 1: uniform in 1..count), each with up to 10 attempts: area fraction uniform in
 * [0.02, 1/3] divided by the rectangles' number, aspect ratio h/w log-uniform in [0.3, 1/0.3],
 * h = round(√(area·ratio)), w = round(√(area/ratio)); the first attempt with h, w below the size
 * is placed uniformly (top, then left) and filled as `mode` says, in every channel; the values are
 * in the normalized space (pixel: N(0, 1) per value). Draws per image after those of the one
 * before, on one xoroshiro128+ hashed from (seed, its own stream). Returns a new array.
 * @throws {TypeError} images not a Float32Array, an option of the wrong type, an unknown option
 * @throws {RangeError} a non-positive count/channels/size, a length that does not match, a bad
 *   seed, probability outside [0, 1], count not a positive integer, an unknown mode
 */
export function randomErasing(images: Float32Array, count: number, channels: number, size: number,
  options: RandomErasingOptions, seed: number): RandomErasingResult {
  assertImages(images, count, 'count', channels, size);
  const o = randomErasingSettings(options);
  assertSeed(seed);

  const rng = seededRng(seed, ERASING_STREAM);
  const rand: Uniform = () => uniformFloat64(rng);
  const S = size, plane = S * S, per = channels * plane, area = S * S;
  const logRatio = [Math.log(0.3), Math.log(1 / 0.3)];
  const out = Float32Array.from(images), boxes: MixBox[][] = [];
  for (let i = 0; i < count; i++) {
    const mine: MixBox[] = [];
    boxes.push(mine);
    if (!(rand() < o.probability)) continue;  // probability 0 never erases, 1 always does
    const n = o.count > 1 ? uniformInt(rng, 1, o.count) : 1;
    for (let k = 0; k < n; k++)
      for (let attempt = 0; attempt < 10; attempt++) {
        const target = (0.02 + (1 / 3 - 0.02) * rand()) * area / n;
        const ratio = Math.exp(logRatio[0] + (logRatio[1] - logRatio[0]) * rand());
        const h = roundHalfEven(Math.sqrt(target * ratio)), w = roundHalfEven(Math.sqrt(target / ratio));
        if (!(w < S && h < S)) continue;
        const top = uniformInt(rng, 0, S - h), left = uniformInt(rng, 0, S - w);
        const colour = o.mode === 'rand' ? Array.from({ length: channels }, () => normal(rand)) : undefined;
        for (let c = 0; c < channels; c++)
          for (let y = top; y < top + h; y++)
            for (let x = left; x < left + w; x++)
              out[i * per + c * plane + y * S + x] = o.mode === 'pixel' ? normal(rand) : colour ? colour[c] : 0;
        mine.push({ top, left, height: h, width: w });
        break;
      }
  }
  return { images: out, boxes };
}

// ---- Beta sampling ------------------------------------------------------------------------------

/**
 * log of a Gamma(alpha, 1) draw. Marsaglia & Tsang (2000), "A simple method for generating gamma
 * variables": for alpha ≥ 1, d = alpha − ⅓, c = 1/√(9d); draw x ~ N(0, 1) (Box–Muller),
 * v = (1 + c·x)³, u ~ U(0, 1]; accept d·v when v > 0 and ln u < ½x² + d − d·v + d·ln v (with
 * the cheap squeeze u < 1 − 0.0331x⁴ first). For alpha < 1, Gamma(alpha) = Gamma(alpha + 1)·U^(1/alpha),
 * kept in logs so that a small alpha (U^(1/alpha) underflowing to 0) still gives a usable value.
 */
function logGamma(alpha: number, rand: Uniform): number {
  if (alpha < 1) return logGamma(alpha + 1, rand) + Math.log(1 - rand()) / alpha;
  const d = alpha - 1 / 3, c = 1 / Math.sqrt(9 * d);
  for (;;) {
    const x = Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
    const t = 1 + c * x;
    if (t <= 0) continue;
    const v = t * t * t, u = 1 - rand();
    if (u < 1 - 0.0331 * x * x * x * x || Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return Math.log(d * v);
  }
}

/** A Gamma(alpha, 1) draw (Marsaglia–Tsang from the uniforms of `rand`); alpha > 0. */
export function sampleGamma(alpha: number, rand: Uniform): number {
  assertFiniteNumber('alpha', alpha, { above: 0 });
  return Math.exp(logGamma(alpha, rand));
}

/**
 * A Beta(a, b) draw as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b), computed as
 * 1 / (1 + e^(ln Y − ln X)) so that it is in [0, 1] and never NaN; a, b > 0.
 */
export function sampleBeta(a: number, b: number, rand: Uniform): number {
  assertFiniteNumber('a', a, { above: 0 });
  assertFiniteNumber('b', b, { above: 0 });
  const lx = logGamma(a, rand), ly = logGamma(b, rand);
  return 1 / (1 + Math.exp(ly - lx));
}

// ---- Mixup / CutMix -----------------------------------------------------------------------------

export interface MixupOptions {
  /** classes of the targets */
  numClasses: number;
  /** Beta(α, α) of mixup; 0 turns mixup off (default 0.8, MAE's fine-tuning recipe) */
  mixupAlpha?: number;
  /** Beta(α, α) of cutmix; 0 turns cutmix off (default 1.0) */
  cutmixAlpha?: number;
  /** probability that a batch is mixed at all, in [0, 1] (default 1) */
  prob?: number;
  /** probability of cutmix rather than mixup when both are on, in [0, 1] (default 0.5) */
  switchProb?: number;
  /** label smoothing s of the targets, in [0, 1] (default 0.1) */
  labelSmoothing?: number;
}

const MIXUP_KEYS = ['numClasses', 'mixupAlpha', 'cutmixAlpha', 'prob', 'switchProb', 'labelSmoothing'] as const;

/** The cutmix box, rows [top, top + height) × columns [left, left + width). */
export interface MixBox {
  top: number;
  left: number;
  height: number;
  width: number;
}

export interface MixupResult {
  /** the mixed batch, a new Float32Array [B, C, S, S] */
  images: Float32Array;
  /** soft targets, Float32Array [B, numClasses]: lambda·smooth(y) + (1 − lambda)·smooth(y reversed) */
  targets: Float32Array;
  /** the weight of each image's own content and label (after cutmix's area correction) */
  lambda: number;
  /** what was applied; 'none' also when the drawn lambda is exactly 1 (timm skips mixing then) */
  mode: 'mixup' | 'cutmix' | 'none';
  /** cutmix only: the box pasted from the reversed batch (height or width 0 when empty) */
  box?: MixBox;
}

/**
 * timm's `Mixup` in mode 'batch' (`timm/data/mixup.py`), with MAE's fine-tuning recipe as the
 * defaults (`--mixup 0.8 --cutmix 1.0 --smoothing 0.1`; `main_finetune.py`'s own argparse
 * defaults are 0 and 0). One lambda per batch; image b is mixed with image B − 1 − b (the batch
 * reversed, `x.flip(0)`), so the batch size must be even. Per call, in this order of draws: with
 * probability `prob` the batch is mixed; if both alphas are > 0, cutmix with probability
 * `switchProb`, else mixup; lam ~ Beta(α, α) of the chosen one.
 * - mixup: x ← lam·x + (1 − lam)·x.flip(0).
 * - cutmix (timm's `rand_bbox`, `correct_lam=True`): cut = ⌊S·√(1 − lam)⌋, centre (cy, cx)
 *   uniform over the pixels, box rows [cy − ⌊cut/2⌋, cy + ⌊cut/2⌋) and the same for columns,
 *   clipped to the image; the box is pasted from x.flip(0) and lam ← 1 − box area / S².
 * Targets: lam·smooth(y) + (1 − lam)·smooth(y.flip(0)) (`mixup_target`). Not mixed (prob 0,
 * both alphas 0 — where timm refuses to construct — or a draw of lam = 1): the images copied,
 * lambda 1, the plain smoothed targets. timm's 'pair'/'elem' modes and `cutmix_minmax` are
 * not implemented.
 */
export class Mixup {
  readonly numClasses: number;
  readonly mixupAlpha: number;
  readonly cutmixAlpha: number;
  readonly prob: number;
  readonly switchProb: number;
  readonly labelSmoothing: number;

  /**
   * @throws {TypeError} options not an object, an unknown option, an option of the wrong type
   * @throws {RangeError} numClasses not a positive integer, an alpha < 0, prob, switchProb or
   *   labelSmoothing outside [0, 1]
   */
  constructor(options: MixupOptions) {
    assertObject('options', options);
    assertKnownKeys('Mixup option', options as unknown as Record<string, unknown>, MIXUP_KEYS);
    const { numClasses, mixupAlpha = 0.8, cutmixAlpha = 1.0, prob = 1.0, switchProb = 0.5, labelSmoothing = 0.1 } = options;
    assertPositiveInteger('numClasses', numClasses);
    assertFiniteNumber('mixupAlpha', mixupAlpha, { min: 0 });
    assertFiniteNumber('cutmixAlpha', cutmixAlpha, { min: 0 });
    assertFiniteNumber('prob', prob, { min: 0, max: 1 });
    assertFiniteNumber('switchProb', switchProb, { min: 0, max: 1 });
    assertSmoothing('labelSmoothing', labelSmoothing);
    this.numClasses = numClasses;
    this.mixupAlpha = mixupAlpha;
    this.cutmixAlpha = cutmixAlpha;
    this.prob = prob;
    this.switchProb = switchProb;
    this.labelSmoothing = labelSmoothing;
  }

  /**
   * Mixes a batch: images Float32Array [batchSize, channels, size, size], labels Int32Array
   * [batchSize]. Neither input is modified.
   * @throws {TypeError} images not a Float32Array, labels not an Int32Array, a number of the wrong type
   * @throws {RangeError} a non-positive or odd batchSize, a non-positive channels/size, a length
   *   that does not match, a label outside 0..numClasses−1 (named by index), a bad seed
   */
  apply(images: Float32Array, labels: Int32Array, batchSize: number, channels: number, size: number,
    seed: number): MixupResult {
    assertImages(images, batchSize, 'batchSize', channels, size);
    if (batchSize % 2 !== 0) {
      throw invalidRangeError('batchSize', "even integer (timm's batch mode mixes image b with image B−1−b)", batchSize);
    }
    assertLabels(labels, this.numClasses, batchSize, 'batchSize');
    assertSeed(seed);

    const rng = seededRng(seed, MIXUP_STREAM);
    const rand: Uniform = () => uniformFloat64(rng);
    const { mixupAlpha, cutmixAlpha } = this;
    let lam = 1, cutmix = false;
    if ((mixupAlpha > 0 || cutmixAlpha > 0) && rand() < this.prob) {
      if (mixupAlpha > 0 && cutmixAlpha > 0) cutmix = rand() < this.switchProb;
      else cutmix = cutmixAlpha > 0;
      const alpha = cutmix ? cutmixAlpha : mixupAlpha;
      lam = sampleBeta(alpha, alpha, rand);
    }
    const out = Float32Array.from(images);
    if (lam === 1) return { images: out, targets: smoothedRows(labels, this.numClasses, this.labelSmoothing, 1), lambda: 1, mode: 'none' };

    const B = batchSize, sample = channels * size * size;
    let box: MixBox | undefined;
    if (cutmix) {
      box = cutmixBox(size, lam, rng);
      lam = 1 - (box.height * box.width) / (size * size);
      for (let b = 0; b < B; b++) {
        const dst = b * sample, src = (B - 1 - b) * sample;
        for (let c = 0; c < channels; c++)
          for (let y = box.top; y < box.top + box.height; y++) {
            const row = c * size * size + y * size;
            for (let x = box.left; x < box.left + box.width; x++) out[dst + row + x] = images[src + row + x];
          }
      }
    } else {
      for (let b = 0; b < B; b++) {
        const dst = b * sample, src = (B - 1 - b) * sample;
        for (let j = 0; j < sample; j++) out[dst + j] = lam * images[dst + j] + (1 - lam) * images[src + j];
      }
    }
    const targets = smoothedRows(labels, this.numClasses, this.labelSmoothing, lam);
    return box ? { images: out, targets, lambda: lam, mode: 'cutmix', box } : { images: out, targets, lambda: lam, mode: 'mixup' };
  }
}

/**
 * timm's `rand_bbox` on a size × size image, margin 0: cut = ⌊size·√(1 − lam)⌋, centre (cy, cx)
 * uniform over the pixels (cy drawn first), rows [cy − ⌊cut/2⌋, cy + ⌊cut/2⌋) clipped to the
 * image, columns likewise. Exported for the tests.
 */
export function cutmixBox(size: number, lam: number, rng: Rng): MixBox {
  const half = Math.floor(Math.trunc(size * Math.sqrt(1 - lam)) / 2);
  const cy = uniformInt(rng, 0, size - 1), cx = uniformInt(rng, 0, size - 1);
  const clip = (v: number) => Math.min(Math.max(v, 0), size);
  const top = clip(cy - half), bottom = clip(cy + half), left = clip(cx - half), right = clip(cx + half);
  return { top, left, height: bottom - top, width: right - left };
}

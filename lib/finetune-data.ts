// The data side of MAE fine-tuning (facebookresearch/mae `main_finetune.py`) for in-memory image
// sets: label smoothing, the training augmentation and timm's Mixup/CutMix in 'batch' mode
// (`timm/data/mixup.py`). Images are Float32Array [B, C, S, S] (square, already normalized),
// labels Int32Array [B], targets Float32Array [B, numClasses].
//
// Everything is seeded: each call takes a uint32 seed and draws from its own xoroshiro128+
// (pure-rand), so a (seed, input) pair always gives the same output and nothing carries state
// from one call to the next (a resumed run repeats its batches when the caller derives the seed
// from the step, as the Trainer does).
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import {
  assertFiniteNumber, assertKnownKeys, assertObject, assertPositiveInteger, invalidRangeError, invalidTypeError,
  isFloat32Array, isInt32Array,
} from './errors.js';
import { randomResizedCropBox } from './folder.js';
import { seededRng, type Rng } from './rng.js';

export type { Rng } from './rng.js';

/** A uniform draw in [0, 1). */
export type Uniform = () => number;


const AUGMENT_STREAM = 1, MIXUP_STREAM = 2;

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
 * Not done: RandAugment (`rand-m9-mstd0.5-inc1`) and random erasing (`reprob 0.25`), which MAE's
 * recipe adds; both are optional in the fine-tuning recipe and left to the caller.
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

// RandAugment's ops (Cubuk et al. 2019, "RandAugment: Practical automated data augmentation with a
// reduced search space") with timm's semantics (`timm/data/auto_augment.py`): the op lists of the
// plain and the 'inc' (increasing-severity) variants, the magnitude → argument mapping of each op,
// and the ops themselves as PIL does them, on one image held as Float64Array [C, S, S] of pixel
// values on the 8-bit scale [0, 255]. Also the parser of timm's config strings
// ('rand-m9-mstd0.5-inc1'). The batch function, which un-normalizes, draws and re-normalizes, is
// `randAugment` in lib/finetune-data.ts.
//
// What is quantized: PIL's lookup-table ops (ImageOps.autocontrast, equalize, invert, posterize,
// solarize and timm's solarize_add, all `Image.point` on uint8) round each value to the nearest
// integer in 0..255 and give integers. The geometric ops (PIL's affine `transform`) and the
// ImageEnhance blends work in floating point and clamp to [0, 255], as PIL's uint8 clips, without
// rounding. Geometric resampling is bilinear (PIL's BILINEAR, taps clamped at the edges, the fill
// colour outside the image) where MAE's recipe asks timm for bicubic: on 32-px images bicubic
// overshoots, and the crop before it is bilinear too (augmentBatch).
import { invalidRangeError, invalidTypeError } from './errors.js';

/** timm's `_RAND_TRANSFORMS`: Posterize and Solarize grow milder with the magnitude; the enhancement factors run from 0.1 (m 0) to 1.9 (m 10). */
export const RAND_TRANSFORMS = ['AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'SolarizeAdd', 'Color',
  'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel'] as const;

/** timm's `_RAND_INCREASING_TRANSFORMS` ('inc1'): every op grows more severe with the magnitude. */
export const RAND_INCREASING_TRANSFORMS = ['AutoContrast', 'Equalize', 'Invert', 'Rotate', 'PosterizeIncreasing',
  'SolarizeIncreasing', 'SolarizeAdd', 'ColorIncreasing', 'ContrastIncreasing', 'BrightnessIncreasing', 'SharpnessIncreasing',
  'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel'] as const;

export type RandAugmentOp = typeof RAND_TRANSFORMS[number] | typeof RAND_INCREASING_TRANSFORMS[number];

/** timm's `_LEVEL_DENOM`: magnitudes run 0..10 and are clipped to that range after the noise. */
export const LEVEL_DENOM = 10;

/** The ops whose argument takes a random sign (timm's `_randomly_negate`). */
const SIGNED = new Set<RandAugmentOp>(['Rotate', 'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel', 'ColorIncreasing',
  'ContrastIncreasing', 'BrightnessIncreasing', 'SharpnessIncreasing']);

/** Whether `op`'s argument is negated with probability ½ (rotation, shear, translation, the increasing enhancements). */
export function isSignedOp(op: RandAugmentOp): boolean {
  return SIGNED.has(op);
}

/**
 * timm's `LEVEL_TO_ARG[op](magnitude)`, with the sign already drawn (`negate`, used by the signed
 * ops only); undefined for the ops without an argument (AutoContrast, Equalize, Invert).
 * - Rotate: ±m/10·30 degrees; ShearX/Y: ±m/10·0.3; TranslateXRel/YRel: ±m/10·0.45 of the size
 * - Posterize: ⌊m/10·4⌋ bits kept; PosterizeIncreasing: 4 − ⌊m/10·4⌋
 * - Solarize: threshold ⌊m/10·256⌋; SolarizeIncreasing: 256 − ⌊m/10·256⌋; SolarizeAdd: add ⌊m/10·110⌋
 * - Color, Contrast, Brightness, Sharpness: factor m/10·1.8 + 0.1;
 *   the Increasing ones: max(0.1, 1 ± m/10·0.9)
 */
export function randAugmentArgument(op: RandAugmentOp, magnitude: number, negate = false): number | undefined {
  const level = magnitude / LEVEL_DENOM;
  const signed = (v: number) => (negate ? -v : v);
  switch (op) {
    case 'AutoContrast': case 'Equalize': case 'Invert': return undefined;
    case 'Rotate': return signed(level * 30);
    case 'ShearX': case 'ShearY': return signed(level * 0.3);
    case 'TranslateXRel': case 'TranslateYRel': return signed(level * 0.45);
    case 'Posterize': return Math.trunc(level * 4);
    case 'PosterizeIncreasing': return 4 - Math.trunc(level * 4);
    case 'Solarize': return Math.trunc(level * 256);
    case 'SolarizeIncreasing': return 256 - Math.trunc(level * 256);
    case 'SolarizeAdd': return Math.trunc(level * 110);
    case 'Color': case 'Contrast': case 'Brightness': case 'Sharpness': return level * 1.8 + 0.1;
    case 'ColorIncreasing': case 'ContrastIncreasing': case 'BrightnessIncreasing': case 'SharpnessIncreasing':
      return Math.max(0.1, 1 + signed(level * 0.9));
  }
}

// ---- the ops, on one image [C, S, S] in [0, 255] ------------------------------------------------

const clamp255 = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : v);
/** The uint8 value PIL would hold: nearest integer, clipped. */
const quantize = (v: number) => Math.round(clamp255(v));

/** Maps every value of the image through a 256-entry table of channel c's, on the quantized values. */
function mapLut(img: Float64Array, C: number, S: number, lutOf: (c: number, plane: Float64Array) => Float64Array | Int32Array): Float64Array {
  const plane = S * S, out = new Float64Array(img.length);
  for (let c = 0; c < C; c++) {
    const src = img.subarray(c * plane, (c + 1) * plane);
    const lut = lutOf(c, src);
    for (let i = 0; i < plane; i++) out[c * plane + i] = lut[quantize(src[i])];
  }
  return out;
}

function histogram(plane: Float64Array): Int32Array {
  const h = new Int32Array(256);
  for (let i = 0; i < plane.length; i++) h[quantize(plane[i])]++;
  return h;
}

const identityLut = () => Int32Array.from({ length: 256 }, (_, i) => i);

/** ImageOps.autocontrast (cutoff 0): each channel's lowest value → 0, highest → 255, ⌊v·scale + offset⌋ between. */
function autoContrastLut(plane: Float64Array): Int32Array {
  const h = histogram(plane);
  let lo = 0, hi = 255;
  while (lo < 256 && h[lo] === 0) lo++;
  while (hi >= 0 && h[hi] === 0) hi--;
  if (hi <= lo) return identityLut();
  const scale = 255 / (hi - lo), offset = -lo * scale;
  return Int32Array.from({ length: 256 }, (_, v) => Math.min(255, Math.max(0, Math.trunc(v * scale + offset))));
}

/**
 * ImageOps.equalize, per channel: step = ⌊(pixels − count of the highest value present) / 255⌋;
 * value v → ⌊(⌊step/2⌋ + pixels below v) / step⌋ (clipped to 255, as `point` clips); the identity
 * when step is 0 or the channel has one value.
 */
function equalizeLut(plane: Float64Array): Int32Array {
  const h = histogram(plane);
  let last = -1, present = 0;
  for (let v = 0; v < 256; v++) if (h[v] > 0) { last = v; present++; }
  if (present <= 1) return identityLut();
  const step = Math.floor((plane.length - h[last]) / 255);
  if (step === 0) return identityLut();
  const lut = new Int32Array(256);
  let n = Math.floor(step / 2);
  for (let v = 0; v < 256; v++) {
    lut[v] = Math.min(255, Math.floor(n / step));
    n += h[v];
  }
  return lut;
}

/** PIL's luma of RGB (ITU-R 601-2, `convert('L')`): 0.299·R + 0.587·G + 0.114·B; one channel is its own. */
function luma(img: Float64Array, C: number, plane: number): Float64Array {
  if (C === 1) return img.slice(0, plane);
  const out = new Float64Array(plane);
  for (let i = 0; i < plane; i++) out[i] = 0.299 * img[i] + 0.587 * img[plane + i] + 0.114 * img[2 * plane + i];
  return out;
}

/** Image.blend(degenerate, img, factor) = degenerate + factor·(img − degenerate), clamped; `degenerate(c, i)` per value. */
function blend(img: Float64Array, C: number, plane: number, factor: number, degenerate: (c: number, i: number) => number): Float64Array {
  const out = new Float64Array(img.length);
  for (let c = 0; c < C; c++)
    for (let i = 0; i < plane; i++) {
      const d = degenerate(c, i);
      out[c * plane + i] = clamp255(d + factor * (img[c * plane + i] - d));
    }
  return out;
}

/** ImageFilter.SMOOTH: the 3×3 kernel [1 1 1; 1 5 1; 1 1 1]/13 inside; PIL copies the border pixels unfiltered. */
function smooth(img: Float64Array, C: number, S: number): Float64Array {
  const out = img.slice(), plane = S * S;
  for (let c = 0; c < C; c++)
    for (let y = 1; y < S - 1; y++)
      for (let x = 1; x < S - 1; x++) {
        const at = c * plane + y * S + x;
        let sum = 4 * img[at];
        for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) sum += img[at + dy * S + dx];
        out[at] = sum / 13;
      }
  return out;
}

/**
 * PIL's `Image.transform(size, AFFINE, (a, b, c, d, e, f))`: output pixel (x, y) samples the input
 * at (a·(x+½) + b·(y+½) + c, d·(x+½) + e·(y+½) + f), pixel centres at +½. A sample outside
 * [0, S)² is `fill`; inside, bilinear between the four nearest centres, taps clamped to the image.
 */
function affine(img: Float64Array, C: number, S: number, m: readonly number[], fill: readonly number[]): Float64Array {
  const [a, b, c0, d, e, f] = m, plane = S * S, out = new Float64Array(img.length);
  const clampTap = (i: number) => (i < 0 ? 0 : i > S - 1 ? S - 1 : i);
  for (let y = 0; y < S; y++)
    for (let x = 0; x < S; x++) {
      const xi = a * (x + 0.5) + b * (y + 0.5) + c0, yi = d * (x + 0.5) + e * (y + 0.5) + f;
      const at = y * S + x;
      if (!(xi >= 0 && xi < S && yi >= 0 && yi < S)) {
        for (let c = 0; c < C; c++) out[c * plane + at] = fill[c];
        continue;
      }
      const xs = xi - 0.5, ys = yi - 0.5, x0 = Math.floor(xs), y0 = Math.floor(ys), wx = xs - x0, wy = ys - y0;
      const l = clampTap(x0), r = clampTap(x0 + 1), t = clampTap(y0) * S, btm = clampTap(y0 + 1) * S;
      for (let c = 0; c < C; c++) {
        const p = c * plane;
        const top = img[p + t + l] + (img[p + t + r] - img[p + t + l]) * wx;
        const bottom = img[p + btm + l] + (img[p + btm + r] - img[p + btm + l]) * wx;
        out[c * plane + at] = top + (bottom - top) * wy;
      }
    }
  return out;
}

/** Python's round(x, 15), as PIL rounds the rotation matrix (so that 90° is exact). */
const round15 = (v: number) => Math.round(v * 1e15) / 1e15;

/** PIL's `rotate(degrees)` (counter-clockwise, about the centre (S/2, S/2), same size) as its affine matrix. */
function rotationMatrix(degrees: number, S: number): number[] {
  const angle = -degrees * Math.PI / 180, cx = S / 2, cy = S / 2;
  const a = round15(Math.cos(angle)), b = round15(Math.sin(angle)), d = round15(-Math.sin(angle)), e = round15(Math.cos(angle));
  return [a, b, a * -cx + b * -cy + cx, d, e, d * -cx + e * -cy + cy];
}

/**
 * One RandAugment op on an image [C, S, S] of values in [0, 255] (C = 1 or 3), with the argument
 * of `randAugmentArgument` and the fill colour of the geometric ops (per channel, timm's
 * `img_mean`: the dataset mean on the 8-bit scale). Returns a new array.
 * @throws {RangeError} an op that needs an argument without a finite one, C not 1 or 3
 */
export function applyRandAugmentOp(op: RandAugmentOp, img: Float64Array, C: number, S: number, arg: number | undefined,
  fill: readonly number[]): Float64Array {
  if (C !== 1 && C !== 3) throw invalidRangeError('channels', '1 or 3 (RandAugment\'s colour ops work on grey or RGB images)', C);
  if (img.length !== C * S * S) throw invalidRangeError('img', `Float64Array of length ${C}·${S}·${S}`, img);
  const needsArg = randAugmentArgument(op, 0) !== undefined;
  if (needsArg && (typeof arg !== 'number' || !Number.isFinite(arg))) throw invalidTypeError(`the argument of ${op}`, 'finite number', arg);
  const v = arg as number, plane = S * S;
  switch (op) {
    case 'AutoContrast': return mapLut(img, C, S, (_, p) => autoContrastLut(p));
    case 'Equalize': return mapLut(img, C, S, (_, p) => equalizeLut(p));
    case 'Invert': return mapLut(img, C, S, () => Int32Array.from({ length: 256 }, (_, i) => 255 - i));
    case 'Posterize': case 'PosterizeIncreasing': {
      if (v >= 8) return img.slice();  // timm returns the image as it is
      const mask = ~((1 << (8 - v)) - 1) & 0xff;  // ImageOps.posterize keeps the top `v` bits
      return mapLut(img, C, S, () => Int32Array.from({ length: 256 }, (_, i) => i & mask));
    }
    case 'Solarize': case 'SolarizeIncreasing':
      return mapLut(img, C, S, () => Int32Array.from({ length: 256 }, (_, i) => (i < v ? i : 255 - i)));
    case 'SolarizeAdd':
      return mapLut(img, C, S, () => Int32Array.from({ length: 256 }, (_, i) => (i < 128 ? Math.min(255, i + v) : i)));
    case 'Brightness': case 'BrightnessIncreasing': return blend(img, C, plane, v, () => 0);
    case 'Contrast': case 'ContrastIncreasing': {
      // ImageEnhance.Contrast: a grey image at the mean luma, rounded (int(mean + 0.5))
      const l = luma(img, C, plane);
      const mean = Math.floor(l.reduce((s, x) => s + x, 0) / plane + 0.5);
      return blend(img, C, plane, v, () => mean);
    }
    case 'Color': case 'ColorIncreasing': {
      const l = luma(img, C, plane);
      return blend(img, C, plane, v, (_, i) => l[i]);
    }
    case 'Sharpness': case 'SharpnessIncreasing': {
      const s = smooth(img, C, S);
      return blend(img, C, plane, v, (c, i) => s[c * plane + i]);
    }
    case 'Rotate': return affine(img, C, S, rotationMatrix(v, S), fill);
    case 'ShearX': return affine(img, C, S, [1, v, 0, 0, 1, 0], fill);
    case 'ShearY': return affine(img, C, S, [1, 0, 0, v, 1, 0], fill);
    case 'TranslateXRel': return affine(img, C, S, [1, 0, v * S, 0, 1, 0], fill);
    case 'TranslateYRel': return affine(img, C, S, [1, 0, 0, 0, 1, v * S], fill);
  }
}

// ---- timm's config string -----------------------------------------------------------------------

/** RandAugment's settings, MAE's fine-tuning recipe ('rand-m9-mstd0.5-inc1') as the defaults. */
export interface RandAugmentOptions {
  /** ops drawn per image, with replacement (timm's num_layers, 'n'; default 2) */
  ops?: number;
  /** magnitude m on timm's 0..10 scale ('m'; default 9) */
  magnitude?: number;
  /** std of the normal noise on the magnitude, per op ('mstd'; default 0.5); Infinity: uniform in [0, m] */
  magnitudeStd?: number;
  /** the increasing-severity op set ('inc1'; default true) */
  increasing?: boolean;
}

/**
 * Parses timm's RandAugment config string, as MAE's `--aa` takes it: 'rand' then '-'-separated
 * sections m<int> (magnitude, default 10), n<int> (ops, default 2), mstd<float> (magnitude noise,
 * default 0; above 100 means uniform), inc<0|1> (increasing ops, default 0); 'none' (or '') is
 * RandAugment off (false). timm's defaults apply to what the string leaves out, as in timm, so
 * 'rand-m9-mstd0.5-inc1' gives { ops: 2, magnitude: 9, magnitudeStd: 0.5, increasing: true }.
 * Refused, with the section named: another policy (AutoAugment 'v0'/'original', 'augmix'), an
 * unknown section, a malformed value, and timm's 'w' (weighted op choice) and 'mmax' (magnitudes
 * above 10), which are not implemented. timm reads inc0 as true (Python's bool('0')); here it is false.
 * @throws {TypeError} config not a string
 * @throws {RangeError} a string that is not a RandAugment config, as above
 */
export function parseRandAugmentConfig(config: string): Required<RandAugmentOptions> | false {
  if (typeof config !== 'string') throw invalidTypeError('RandAugment config', "string such as 'rand-m9-mstd0.5-inc1'", config);
  const text = config.trim();
  if (text === '' || text === 'none') return false;
  const bad = (why: string) => new RangeError(`RandAugment config '${config}': ${why} (expected rand-m<int>-n<int>-mstd<float>-inc<0|1>, e.g. MAE's rand-m9-mstd0.5-inc1, or none)`);
  const [policy, ...sections] = text.split('-');
  if (policy !== 'rand') {
    throw bad(policy === 'augmix' || /^(v0r?|original(r)?)$/.test(policy)
      ? `'${policy}' is not implemented; only RandAugment ('rand-…') is` : `it must start with 'rand'`);
  }
  const out = { ops: 2, magnitude: LEVEL_DENOM, magnitudeStd: 0, increasing: false };
  const seen = new Set<string>();
  for (const s of sections) {
    const m = /^([a-z]+)(.*)$/.exec(s);
    if (!m || m[2] === '') throw bad(`section '${s}' is not a key followed by a number`);
    const [, key, value] = m;
    if (seen.has(key)) throw bad(`'${key}' is given twice`);
    seen.add(key);
    const integer = () => {
      if (!/^\d+$/.test(value)) throw bad(`'${key}' takes a non-negative integer, got '${value}'`);
      return Number(value);
    };
    switch (key) {
      case 'm': out.magnitude = integer(); break;
      case 'n': out.ops = integer(); break;
      case 'mstd': {
        if (!/^\d+(\.\d*)?$|^\.\d+$/.test(value)) throw bad(`'mstd' takes a non-negative number, got '${value}'`);
        const std = Number(value);
        out.magnitudeStd = std > 100 ? Infinity : std;  // timm: above 100, uniform sampling
        break;
      }
      case 'inc': {
        if (value !== '0' && value !== '1') throw bad(`'inc' takes 0 or 1, got '${value}'`);
        out.increasing = value === '1';
        break;
      }
      case 'w': case 'mmax': throw bad(`timm's '${key}' is not implemented`);
      default: throw bad(`unknown section '${s}'`);
    }
  }
  return out;
}

// RandAugment and random erasing (timm's auto_augment.py and random_erasing.py, MAE's fine-tuning
// recipe): each op's known answer on small hand-made images, the magnitude → argument mapping
// against timm's formulas worked by hand, timm's config strings, the batch functions' draws
// (determinism, op set, probability ½, magnitude noise, rectangle sizes) and bad calls.
import test from 'ava';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';
import { randAugment, randomErasing } from '../lib/finetune-data.js';
import {
  RAND_INCREASING_TRANSFORMS, RAND_TRANSFORMS, applyRandAugmentOp, parseRandAugmentConfig, randAugmentArgument, type RandAugmentOp,
} from '../lib/rand-augment.js';

const img = (...v: number[]) => Float64Array.from(v);
const op = (name: RandAugmentOp, image: Float64Array, C: number, S: number, arg?: number, fill: number[] = [7, 8, 9]) =>
  [...applyRandAugmentOp(name, image, C, S, arg, fill)];
/** a C × S × S image whose value at (c, y, x) is f(c, y, x) */
const image = (C: number, S: number, f: (c: number, y: number, x: number) => number) =>
  Float64Array.from({ length: C * S * S }, (_, i) => f(Math.floor(i / (S * S)), Math.floor(i / S) % S, i % S));

function values(n: number, seed: number, lo = -2, hi = 2): Float32Array {
  const rng = xoroshiro128plus(seed);
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * uniformFloat64(rng));
}

// ---- the ops -------------------------------------------------------------------------------------

test('Invert, Solarize, SolarizeAdd and Posterize on quantized values', (t) => {
  t.deepEqual(op('Invert', img(0, 10.4, 199.6, 255), 1, 2), [255, 245, 55, 0], 'values rounded to uint8 first');
  t.deepEqual(op('Invert', img(-3, 300, 128, 127), 1, 2), [255, 0, 127, 128], 'clipped to 0..255');
  t.deepEqual(op('Solarize', img(0, 127, 128, 255), 1, 2, 128), [0, 127, 127, 0], 'v ≥ threshold → 255 − v');
  t.deepEqual(op('SolarizeIncreasing', img(0, 25, 26, 200), 1, 2, 26), [0, 25, 229, 55]);
  t.deepEqual(op('Solarize', img(0, 100, 200, 255), 1, 2, 256), [0, 100, 200, 255], 'threshold 256: unchanged');
  t.deepEqual(op('SolarizeAdd', img(0, 100, 127, 128), 1, 2, 99), [99, 199, 226, 128], 'below 128: + add');
  t.deepEqual(op('SolarizeAdd', img(0, 127, 128, 255), 1, 2, 200), [200, 255, 128, 255], 'capped at 255');
  t.deepEqual(op('Posterize', img(0, 63, 64, 200), 1, 2, 2), [0, 0, 64, 192], 'the top 2 bits kept');
  t.deepEqual(op('PosterizeIncreasing', img(127, 128, 255, 1), 1, 2, 1), [0, 128, 128, 0], 'the top bit');
  t.deepEqual(op('Posterize', img(0, 63, 64, 255), 1, 2, 0), [0, 0, 0, 0], 'no bits: black');
  t.deepEqual(op('Posterize', img(0.4, 63, 64, 255), 1, 2, 8), [0.4, 63, 64, 255], '8 bits: the image as it is (timm)');
});

test('Equalize and AutoContrast on known histograms, channel by channel', (t) => {
  // 1024 pixels: 512 of 0, 256 of 100, 256 of 200; step = ⌊(1024 − 256)/255⌋ = 3, n starts at 1:
  // 0 → ⌊1/3⌋ = 0, 100 → ⌊(1 + 512)/3⌋ = 171, 200 → ⌊(1 + 768)/3⌋ = 256, clipped to 255
  const S = 32, eq = op('Equalize', image(1, S, (_, y) => (y < 16 ? 0 : y < 24 ? 100 : 200)), 1, S);
  t.deepEqual([...new Set(eq)], [0, 171, 255]);
  t.is(eq[20 * S], 171);
  t.deepEqual(op('Equalize', img(10, 10, 20, 30), 1, 2), [10, 10, 20, 30], 'step 0 (few pixels): identity');
  t.deepEqual(op('Equalize', img(5, 5, 5, 5), 1, 2), [5, 5, 5, 5], 'one value: identity');
  // channel 0 spans 0..85: scale 3; channel 1 is constant: identity; channel 2 spans 51..255 → 0..255
  const ac = op('AutoContrast', img(0, 10, 85, 20, 40, 40, 40, 40, 51, 255, 153, 100), 3, 2);
  t.deepEqual(ac.slice(0, 4), [0, 30, 255, 60]);
  t.deepEqual(ac.slice(4, 8), [40, 40, 40, 40]);
  t.deepEqual(ac.slice(8), [0, 255, 127, 61], '⌊(v − 51)·1.25⌋');
});

test('Brightness, Contrast, Color and Sharpness blend with PIL\'s degenerate images: d + f·(v − d)', (t) => {
  t.deepEqual(op('Brightness', img(100, 200, 0, 40), 1, 2, 1.5), [150, 255, 0, 60], 'degenerate black; clipped at 255');
  t.deepEqual(op('BrightnessIncreasing', img(100, 200, 0, 40), 1, 2, 0.5), [50, 100, 0, 20]);
  // grey: mean 138.75 → 139 (int(mean + 0.5))
  t.deepEqual(op('Contrast', img(0, 100, 200, 255), 1, 2, 0.5), [69.5, 119.5, 169.5, 197]);
  // RGB: the mean of the luma 0.299·R + 0.587·G + 0.114·B over the image, rounded
  const rgb = img(255, 255, 0, 0, 0, 0, 255, 255, 0, 0, 0, 0);  // two red, two green pixels
  const m = Math.floor((2 * 0.299 * 255 + 2 * 0.587 * 255) / 4 + 0.5);
  t.is(m, 113);
  t.deepEqual(op('ContrastIncreasing', rgb, 3, 2, 0), Array(12).fill(m), 'factor 0: the grey');
  const color = op('Color', rgb, 3, 2, 0);
  const lRed = 0.299 * 255, lGreen = 0.587 * 255;
  for (let c = 0; c < 3; c++) t.deepEqual(color.slice(4 * c, 4 * c + 4).map((v) => +v.toFixed(9)), [lRed, lRed, lGreen, lGreen].map((v) => +v.toFixed(9)));
  const vivid = op('ColorIncreasing', img(200, 100, 100), 3, 1, 2).map((v) => +v.toFixed(9));
  const l = 0.299 * 200 + 0.587 * 100 + 0.114 * 100;
  t.deepEqual(vivid.slice(0, 3), [Math.min(255, 2 * 200 - l), 2 * 100 - l, 2 * 100 - l].map((v) => +v.toFixed(9)));
  t.deepEqual(op('Color', img(10, 20, 30, 40), 1, 2, 0), [10, 20, 30, 40], 'a grey image has no colour to take');
  // SMOOTH = [1 1 1; 1 5 1; 1 1 1]/13 inside, the border copied: the centre 130 on black smooths to 50
  const dot = image(1, 3, (_, y, x) => (y === 1 && x === 1 ? 130 : 0));
  t.deepEqual(op('Sharpness', dot, 1, 3, 0), [0, 0, 0, 0, 50, 0, 0, 0, 0]);
  t.deepEqual(op('SharpnessIncreasing', dot, 1, 3, 2), [0, 0, 0, 0, 210, 0, 0, 0, 0], '50 + 2·(130 − 50)');
  const ramp = image(1, 3, (_, y, x) => 10 * y + x);
  t.deepEqual(op('Sharpness', ramp, 1, 3, 0).map((v) => +v.toFixed(9)), [...ramp], 'a linear ramp is its own smoothing');
});

test('Rotate 90° is a transpose then a vertical flip, exactly; 0° is the identity', (t) => {
  const S = 4, src = image(3, S, (c, y, x) => 100 * c + 10 * y + x);
  const r = op('Rotate', src, 3, S, 90);  // counter-clockwise, as PIL: out(y, x) = in(x, S − 1 − y)
  t.deepEqual(r, [...image(3, S, (c, y, x) => 100 * c + 10 * x + (S - 1 - y))]);
  t.deepEqual(op('Rotate', src, 3, S, -90), [...image(3, S, (c, y, x) => 100 * c + 10 * (S - 1 - x) + y)]);
  t.deepEqual(op('Rotate', src, 3, S, 0), [...src]);
  // 30°: the corners leave the image and take the fill, the centre stays
  const big = 9, rot = op('Rotate', image(1, big, () => 50), 1, big, 30, [128]);
  t.is(rot[0], 128);
  t.is(rot[4 * big + 4], 50);
});

test('Translate shifts by pct·size and fills with the mean colour; Shear moves rows by factor·(y + ½)', (t) => {
  const S = 4, C = 3, fill = [11, 22, 33], src = image(C, S, (c, y, x) => 100 * c + 10 * y + x);
  const left = op('TranslateXRel', src, C, S, 0.25, fill);  // 1 px: out(x) = in(x + 1), the last column filled
  t.deepEqual(left, [...image(C, S, (c, y, x) => (x < S - 1 ? 100 * c + 10 * y + x + 1 : fill[c]))]);
  const right = op('TranslateXRel', src, C, S, -0.5, fill);
  t.deepEqual(right, [...image(C, S, (c, y, x) => (x >= 2 ? 100 * c + 10 * y + x - 2 : fill[c]))]);
  const up = op('TranslateYRel', src, C, S, 0.25, fill);
  t.deepEqual(up, [...image(C, S, (c, y, x) => (y < S - 1 ? 100 * c + 10 * (y + 1) + x : fill[c]))]);
  // ShearX 0.5 on in(y, x) = 10x: row 0 samples x + 0.25 (bilinear), row 3 x + 1.75, fill past the edge
  const sheared = op('ShearX', image(1, S, (_, __, x) => 10 * x), 1, S, 0.5, [99]);
  t.deepEqual(sheared.slice(0, 4), [2.5, 12.5, 22.5, 30], 'the last tap clamped to the image');
  t.deepEqual(sheared.slice(12), [17.5, 27.5, 99, 99]);
  const shearY = op('ShearY', image(1, S, (_, y) => 10 * y), 1, S, 0.5, [99]);
  t.deepEqual([0, 1, 2, 3].map((y) => shearY[y * S]), [2.5, 12.5, 22.5, 30], 'ShearY is ShearX transposed');
});

test('magnitude → argument as timm\'s level functions (level = m/10)', (t) => {
  const arg = (o: RandAugmentOp, m: number, neg = false) => randAugmentArgument(o, m, neg)!;
  t.is(arg('Rotate', 9), 27);
  t.is(arg('Rotate', 9, true), -27);
  t.is(arg('Rotate', 5), 15);
  t.is(arg('ShearX', 10), 0.3);
  t.is(arg('ShearY', 5, true), -0.15);
  t.is(arg('TranslateXRel', 10), 0.45);
  t.true(Math.abs(arg('TranslateYRel', 9) - 0.405) < 1e-15);
  t.is(arg('Posterize', 9), 3, '⌊3.6⌋');
  t.is(arg('PosterizeIncreasing', 9), 1, '4 − ⌊3.6⌋');
  t.is(arg('PosterizeIncreasing', 0), 4);
  t.is(arg('Solarize', 9), 230, '⌊230.4⌋');
  t.is(arg('SolarizeIncreasing', 9), 26, '256 − 230');
  t.is(arg('SolarizeIncreasing', 0), 256);
  t.is(arg('SolarizeAdd', 9), 99);
  t.is(arg('SolarizeAdd', 5), 55);
  t.true(Math.abs(arg('Contrast', 9) - 1.72) < 1e-12, '0.9·1.8 + 0.1');
  t.true(Math.abs(arg('Color', 0) - 0.1) < 1e-12);
  t.true(Math.abs(arg('BrightnessIncreasing', 9) - 1.81) < 1e-12, '1 + 0.9·0.9');
  t.true(Math.abs(arg('SharpnessIncreasing', 9, true) - 0.19) < 1e-12, '1 − 0.81');
  t.is(arg('ColorIncreasing', 10, true), 0.1, 'kept ≥ 0.1');
  t.is(randAugmentArgument('Equalize', 9), undefined);
  t.is(RAND_INCREASING_TRANSFORMS.length, 15);
  t.is(RAND_TRANSFORMS.length, 15);
});

test('bad op calls are refused with the argument named', (t) => {
  t.throws(() => applyRandAugmentOp('Rotate', img(0, 0, 0, 0), 1, 2, undefined, [0]), { instanceOf: TypeError, message: /argument of Rotate/ });
  t.throws(() => applyRandAugmentOp('Invert', new Float64Array(8), 2, 2, undefined, [0, 0]), { instanceOf: RangeError, message: /channels/ });
  t.throws(() => applyRandAugmentOp('Invert', new Float64Array(5), 1, 2, undefined, [0]), { instanceOf: RangeError, message: /img/ });
});

// ---- timm's config strings ----------------------------------------------------------------------

test('timm\'s RandAugment config strings parse as timm reads them; bad ones are refused with the section named', (t) => {
  t.deepEqual(parseRandAugmentConfig('rand-m9-mstd0.5-inc1'), { ops: 2, magnitude: 9, magnitudeStd: 0.5, increasing: true });
  t.deepEqual(parseRandAugmentConfig('rand-n3-m5'), { ops: 3, magnitude: 5, magnitudeStd: 0, increasing: false });
  t.deepEqual(parseRandAugmentConfig('rand'), { ops: 2, magnitude: 10, magnitudeStd: 0, increasing: false }, "timm's defaults");
  t.deepEqual(parseRandAugmentConfig('rand-inc0-mstd.5'), { ops: 2, magnitude: 10, magnitudeStd: 0.5, increasing: false });
  t.is((parseRandAugmentConfig('rand-mstd101') as { magnitudeStd: number }).magnitudeStd, Infinity, 'above 100: uniform');
  t.is(parseRandAugmentConfig('none'), false);
  t.is(parseRandAugmentConfig(''), false);
  for (const [bad, why] of [['rand-m9.5', /'m' takes a non-negative integer/], ['rand-x1', /unknown section 'x1'/], ['rnd-m9', /start with 'rand'/],
    ['v0', /'v0' is not implemented/], ['augmix-m5', /'augmix' is not implemented/], ['rand-m', /'m' is not a key followed by a number/],
    ['rand-inc2', /'inc' takes 0 or 1/], ['rand-w0', /'w' is not implemented/], ['rand-mmax20', /'mmax' is not implemented/],
    ['rand-m9-m8', /'m' is given twice/], ['rand--m9', /section '' is not/], ['rand-mstd-1', /section '1'|mstd/]] as const)
    t.throws(() => parseRandAugmentConfig(bad), { instanceOf: RangeError, message: why }, bad);
  t.throws(() => parseRandAugmentConfig(9 as never), { instanceOf: TypeError });
});

// ---- randAugment on a batch ---------------------------------------------------------------------

const NORM = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

test('randAugment: the result is the ops it reports, applied in order to the un-normalized pixels and normalized back', (t) => {
  const B = 24, C = 3, S = 8, per = C * S * S;
  // normalized images of pixels in [0, 1]
  const pixels = values(B * per, 3, 0, 1);
  const x = Float32Array.from(pixels, (v, i) => (v - NORM.mean[Math.floor(i / (S * S)) % C]) / NORM.std[Math.floor(i / (S * S)) % C]);
  const r = randAugment(x, B, C, S, {}, 17, NORM);
  const fill = NORM.mean.map((m) => Math.round(255 * m));
  t.deepEqual(fill, [124, 116, 104], "timm's img_mean");
  let unchanged = 0;
  for (let b = 0; b < B; b++) {
    const got = r.images.subarray(b * per, (b + 1) * per);
    if (r.applied[b].length === 0) {
      unchanged++;
      t.deepEqual(got, x.subarray(b * per, (b + 1) * per), 'no op: copied bitwise');
      continue;
    }
    let px = Float64Array.from({ length: per }, (_, j) => Math.min(255, Math.max(0, (x[b * per + j] * NORM.std[Math.floor(j / (S * S))] + NORM.mean[Math.floor(j / (S * S))]) * 255)));
    for (const a of r.applied[b]) px = applyRandAugmentOp(a.op, px, C, S, a.argument, fill);
    const want = Float32Array.from(px, (v, j) => (v / 255 - NORM.mean[Math.floor(j / (S * S))]) / NORM.std[Math.floor(j / (S * S))]);
    t.deepEqual(got, want, `image ${b}: ${r.applied[b].map((a) => a.op).join(', ')}`);
  }
  t.true(unchanged > 0 && unchanged < B, `${unchanged} of ${B} images with no op (each ¼)`);
});

test('randAugment: same seed same batch, another seed another; the op set, probability ½ and the magnitude noise as timm draws them', (t) => {
  const B = 600, C = 1, S = 4, x = values(B * S * S, 5);
  const mnist = { mean: [0.5], std: [0.5] };
  const a = randAugment(x, B, C, S, {}, 1, mnist), b = randAugment(x, B, C, S, {}, 1, mnist), c = randAugment(x, B, C, S, {}, 2, mnist);
  t.deepEqual(a.images, b.images);
  t.deepEqual(a.applied, b.applied);
  t.notDeepEqual(a.images, c.images);
  t.deepEqual(x, values(B * S * S, 5), 'the input is not modified');

  const all = a.applied.flat();
  const rate = all.length / (2 * B);
  t.true(rate > 0.45 && rate < 0.55, `applied ${rate} of the ops drawn (½)`);
  t.deepEqual([...new Set(all.map((o) => o.op))].sort(), [...RAND_INCREASING_TRANSFORMS].sort(), 'every op of the increasing set, no other');
  const m = all.map((o) => o.magnitude), mean = m.reduce((s, v) => s + v, 0) / m.length;
  t.true(m.every((v) => v >= 0 && v <= 10), 'clipped to [0, 10]');
  t.true(Math.abs(mean - 8.996) < 0.06, `mean magnitude ${mean}: N(9, 0.5) clipped to [0, 10] has mean 8.996`);
  const rotations = all.filter((o) => o.op === 'Rotate').map((o) => o.argument!);
  t.true(rotations.some((v) => v < 0) && rotations.some((v) => v > 0), 'both signs');
  t.true(rotations.every((v) => Math.abs(v) <= 30));

  const plain = randAugment(x, B, C, S, { increasing: false, magnitudeStd: 0, magnitude: 5, ops: 3 }, 1, mnist).applied.flat();
  t.deepEqual([...new Set(plain.map((o) => o.op))].sort(), [...RAND_TRANSFORMS].sort(), 'the plain set');
  t.true(plain.every((o) => o.magnitude === 5), 'no noise with magnitudeStd 0');
  t.true(Math.abs(plain.length / (3 * B) - 0.5) < 0.05);
  const uniform = randAugment(x, B, C, S, { magnitude: 6, magnitudeStd: Infinity }, 1, mnist).applied.flat().map((o) => o.magnitude);
  t.true(uniform.every((v) => v >= 0 && v <= 6) && Math.abs(uniform.reduce((s, v) => s + v, 0) / uniform.length - 3) < 0.3, 'uniform in [0, m]');
  t.deepEqual(randAugment(x, B, C, S, { ops: 0 }, 1, mnist).images, x, 'no ops: the batch as it is');
});

test('randAugment refuses bad calls with the argument named', (t) => {
  const x = new Float32Array(2 * 3 * 4 * 4);
  t.throws(() => randAugment(x, 2, 3, 4, { ops: -1 }, 0, NORM), { instanceOf: RangeError, message: /randAugment\.ops/ });
  t.throws(() => randAugment(x, 2, 3, 4, { magnitude: NaN }, 0, NORM), { instanceOf: RangeError, message: /randAugment\.magnitude/ });
  t.throws(() => randAugment(x, 2, 3, 4, { magnitudeStd: -1 }, 0, NORM), { instanceOf: RangeError, message: /randAugment\.magnitudeStd/ });
  t.throws(() => randAugment(x, 2, 3, 4, { increasing: 1 } as never, 0, NORM), { instanceOf: TypeError, message: /randAugment\.increasing/ });
  t.throws(() => randAugment(x, 2, 3, 4, { n: 2 } as never, 0, NORM), { message: /n/ });
  t.throws(() => randAugment(x, 2, 3, 4, {}, 0, { mean: [0.5], std: [0.5] }), { instanceOf: RangeError, message: /normalization\.mean/ });
  t.throws(() => randAugment(x, 2, 3, 4, {}, 0, { mean: [0, 0, 0], std: [1, 0, 1] }), { instanceOf: RangeError, message: /normalization\.std\[1\]/ });
  t.throws(() => randAugment(x, 2, 3, 4, {}, 0, undefined as never), { instanceOf: TypeError, message: /normalization/ });
  t.throws(() => randAugment(x, 3, 2, 4, {}, 0, NORM), { instanceOf: RangeError, message: /channels/ });
  t.throws(() => randAugment(x, 2, 3, 5, {}, 0, NORM), { instanceOf: RangeError, message: /images/ });
  t.throws(() => randAugment(x, 2, 3, 4, {}, -1, NORM), { instanceOf: RangeError, message: /seed/ });
});

// ---- random erasing ------------------------------------------------------------------------------

test('randomErasing: probability 0 changes nothing, 1 erases one rectangle an image, filled with N(0, 1) per value', (t) => {
  const B = 400, C = 3, S = 32, per = C * S * S, x = values(B * per, 9, 5, 6);  // values in [5, 6): erased ones stand out
  const none = randomErasing(x, B, C, S, { probability: 0 }, 3);
  t.deepEqual(none.images, x);
  t.true(none.boxes.every((b) => b.length === 0));
  const r = randomErasing(x, B, C, S, { probability: 1 }, 3);
  t.true(r.boxes.every((b) => b.length === 1), 'exactly one rectangle per image');
  const erased: number[] = [];
  const areas: number[] = [], logRatios: number[] = [];
  for (let b = 0; b < B; b++) {
    const box = r.boxes[b][0];
    t.true(box.top >= 0 && box.left >= 0 && box.top + box.height <= S && box.left + box.width <= S && box.height < S && box.width < S);
    areas.push((box.height * box.width) / (S * S));
    logRatios.push(Math.log(box.height / box.width));
    for (let c = 0; c < C; c++)
      for (let y = 0; y < S; y++)
        for (let xx = 0; xx < S; xx++) {
          const i = b * per + c * S * S + y * S + xx, inside = y >= box.top && y < box.top + box.height && xx >= box.left && xx < box.left + box.width;
          if (inside) erased.push(r.images[i]);
          else if (r.images[i] !== x[i]) return t.fail(`image ${b}: a value outside the rectangle changed`);
        }
  }
  // sides rounded to whole pixels: area fractions near [0.02, 1/3], ratios near [0.3, 3.3] and log-symmetric
  t.true(areas.every((a) => a > 0.013 && a < 0.37), `areas ${Math.min(...areas)}..${Math.max(...areas)}`);
  t.true(areas.some((a) => a < 0.05) && areas.some((a) => a > 0.28), 'the area range is covered');
  const ratios = logRatios.map(Math.exp);
  t.true(ratios.every((q) => q > 0.22 && q < 4.5), `ratios ${Math.min(...ratios)}..${Math.max(...ratios)}`);
  const meanLog = logRatios.reduce((s, v) => s + v, 0) / B;
  t.true(Math.abs(meanLog) < 0.12, `mean log ratio ${meanLog} (log-uniform, symmetric)`);
  const m = erased.reduce((s, v) => s + v, 0) / erased.length, v = erased.reduce((s, e) => s + (e - m) ** 2, 0) / erased.length;
  t.true(Math.abs(m) < 0.02 && Math.abs(v - 1) < 0.03, `erased values: mean ${m}, variance ${v}`);
  const quarter = randomErasing(x, B, C, S, { probability: 0.25 }, 3).boxes.filter((b) => b.length > 0).length / B;
  t.true(Math.abs(quarter - 0.25) < 0.06, `${quarter} of the images erased at 0.25`);
});

test('randomErasing: count n gives 1..n rectangles; rand and const modes; deterministic per seed', (t) => {
  const B = 300, C = 3, S = 16, per = C * S * S, x = values(B * per, 4, 5, 6);
  const r = randomErasing(x, B, C, S, { probability: 1, count: 3 }, 8);
  t.deepEqual([...new Set(r.boxes.map((b) => b.length))].sort(), [1, 2, 3]);
  t.deepEqual(randomErasing(x, B, C, S, { probability: 1, count: 3 }, 8).images, r.images);
  t.notDeepEqual(randomErasing(x, B, C, S, { probability: 1, count: 3 }, 9).images, r.images);
  const x4 = x.subarray(0, 4 * per);
  const rand = randomErasing(x4, 4, C, S, { probability: 1, mode: 'rand' }, 1), konst = randomErasing(x4, 4, C, S, { probability: 1, mode: 'const' }, 1);
  for (let b = 0; b < 4; b++) {
    const box = rand.boxes[b][0], cbox = konst.boxes[b][0];
    for (let c = 0; c < C; c++) {
      const first = rand.images[b * per + c * S * S + box.top * S + box.left];
      for (let y = box.top; y < box.top + box.height; y++)
        for (let xx = box.left; xx < box.left + box.width; xx++) t.is(rand.images[b * per + c * S * S + y * S + xx], first);
      for (let y = cbox.top; y < cbox.top + cbox.height; y++)
        for (let xx = cbox.left; xx < cbox.left + cbox.width; xx++) t.is(konst.images[b * per + c * S * S + y * S + xx], 0);
    }
  }
  t.throws(() => randomErasing(x, B, C, S, { probability: 1.5 }, 0), { instanceOf: RangeError, message: /randomErasing\.probability/ });
  t.throws(() => randomErasing(x, B, C, S, { count: 0 }, 0), { instanceOf: RangeError, message: /randomErasing\.count/ });
  t.throws(() => randomErasing(x, B, C, S, { mode: 'noise' } as never, 0), { instanceOf: RangeError, message: /randomErasing\.mode/ });
  t.throws(() => randomErasing(x, B, C, S, { prob: 1 } as never, 0), { message: /prob/ });
  t.throws(() => randomErasing(x, B + 1, C, S, {}, 0), { instanceOf: RangeError, message: /images/ });
});

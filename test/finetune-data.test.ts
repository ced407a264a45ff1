// Fine-tuning data (MAE main_finetune.py, timm's Mixup in 'batch' mode): smoothed one-hot
// targets, the RandomResizedCrop + flip augmentation, the Beta sampler and Mixup/CutMix — known
// answers on tiny inputs, properties over random seeds and shapes, determinism, and bad calls
// (error class and the argument named).
import test from 'ava';
import fc from 'fast-check';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';
import { Mixup, augmentBatch, cutmixBox, sampleBeta, sampleGamma, smoothOneHot } from '../lib/finetune-data.js';
import type { MixupResult } from '../lib/finetune-data.js';

/** Deterministic test values in [−2, 2), distinct enough that a wrong index shows. */
function values(n: number, seed: number): Float32Array {
  const rng = xoroshiro128plus(seed);
  return Float32Array.from({ length: n }, () => 4 * uniformFloat64(rng) - 2);
}

function uniform(seed: number): () => number {
  const rng = xoroshiro128plus(seed);
  return () => uniformFloat64(rng);
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

function variance(xs: number[]): number {
  const m = mean(xs);
  return xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1);
}

/** Checks a Mixup result against its inputs, whatever the mode: the image relation and the targets. */
function checkMix(t: { true: (v: boolean, m?: string) => void; is: (a: unknown, b: unknown, m?: string) => void },
  r: MixupResult, x: Float32Array, labels: Int32Array, B: number, C: number, S: number, numClasses: number,
  smoothing: number): void {
  const sample = C * S * S, lam = r.lambda;
  t.true(lam >= 0 && lam <= 1, `lambda ${lam} outside [0, 1]`);
  if (r.mode === 'none') {
    t.is(lam, 1);
    t.is(r.box, undefined);
    for (let i = 0; i < x.length; i++) if (r.images[i] !== x[i]) return t.true(false, `none: pixel ${i} changed`);
  } else if (r.mode === 'mixup') {
    t.is(r.box, undefined);
    for (let b = 0; b < B; b++)
      for (let j = 0; j < sample; j++) {
        const want = lam * x[b * sample + j] + (1 - lam) * x[(B - 1 - b) * sample + j];
        const got = r.images[b * sample + j];
        if (Math.abs(got - want) > 1e-6 * (1 + Math.abs(want))) return t.true(false, `mixup: image ${b} value ${j}: ${got} vs ${want}`);
      }
  } else {
    const box = r.box!;
    t.true(box.top >= 0 && box.left >= 0 && box.height >= 0 && box.width >= 0
      && box.top + box.height <= S && box.left + box.width <= S, `box ${JSON.stringify(box)} outside the ${S}×${S} image`);
    t.is(lam, 1 - (box.height * box.width) / (S * S));
    for (let b = 0; b < B; b++)
      for (let c = 0; c < C; c++)
        for (let y = 0; y < S; y++)
          for (let xx = 0; xx < S; xx++) {
            const inside = y >= box.top && y < box.top + box.height && xx >= box.left && xx < box.left + box.width;
            const off = c * S * S + y * S + xx;
            const want = x[(inside ? B - 1 - b : b) * sample + off];
            if (r.images[b * sample + off] !== want) return t.true(false, `cutmix: image ${b} (${c},${y},${xx}) inside=${inside}`);
          }
  }
  const off = smoothing / numClasses, on = 1 - smoothing + off;
  for (let b = 0; b < B; b++) {
    let sum = 0;
    for (let k = 0; k < numClasses; k++) {
      const v = r.targets[b * numClasses + k];
      const want = lam * (k === labels[b] ? on : off) + (1 - lam) * (k === labels[B - 1 - b] ? on : off);
      if (!(v >= 0) || Math.abs(v - want) > 1e-6) return t.true(false, `target [${b}, ${k}] = ${v}, expected ${want}`);
      sum += v;
    }
    if (Math.abs(sum - 1) > 1e-5) return t.true(false, `target row ${b} sums to ${sum}`);
  }
}

// ---- smoothOneHot -------------------------------------------------------------------------------

test('smoothOneHot: off = s/C, on = 1 − s + s/C', (t) => {
  const y = smoothOneHot(Int32Array.from([2, 0]), 4, 0.1);
  t.deepEqual(Array.from(y), [0.025, 0.025, 0.925, 0.025, 0.925, 0.025, 0.025, 0.025].map(Math.fround));
  t.deepEqual(Array.from(smoothOneHot(Int32Array.from([1]), 3, 0)), [0, 1, 0]);
  t.deepEqual(Array.from(smoothOneHot(Int32Array.from([1]), 2, 1)), [0.5, 0.5]);
  t.is(smoothOneHot(new Int32Array(0), 5, 0.1).length, 0);
});

// ---- augmentBatch -------------------------------------------------------------------------------

test('augmentBatch: a full-image box with hflip 1 mirrors each row exactly', (t) => {
  const N = 3, C = 2, S = 5, x = values(N * C * S * S, 1);
  const out = augmentBatch(x, N, C, S, 7, { scale: [1, 1], ratio: [1, 1], hflip: 1 });
  const want = new Float32Array(x.length);
  for (let r = 0; r < N * C * S; r++)
    for (let i = 0; i < S; i++) want[r * S + i] = x[r * S + S - 1 - i];
  t.deepEqual(out, want);
});

test('augmentBatch: a full-image box with hflip 0 is the identity, in a new array', (t) => {
  const N = 2, C = 3, S = 4, x = values(N * C * S * S, 2);
  const out = augmentBatch(x, N, C, S, 123, { scale: [1, 1], ratio: [1, 1], hflip: 0 });
  t.deepEqual(out, x);
  t.not(out, x);
});

test('augmentBatch: crops resample bilinearly (half-pixel centres, clamped) — exact on ramps', (t) => {
  // channel 0 is the column index, channel 1 the row index: bilinear interpolation of a linear
  // ramp is exact, so output column o of a crop [left, left + w) holds left + clamp((o + ½)·w/S − ½, 0, w − 1)
  const N = 12, S = 8, plane = S * S, x = new Float32Array(N * 2 * plane);
  for (let i = 0; i < N; i++)
    for (let y = 0; y < S; y++)
      for (let c = 0; c < S; c++) {
        x[(i * 2) * plane + y * S + c] = c;
        x[(i * 2 + 1) * plane + y * S + c] = y;
      }
  const expected = (start: number, w: number, o: number) => start + Math.min(Math.max((o + 0.5) * w / S - 0.5, 0), w - 1);
  const widths = new Set<number>();
  for (const hflip of [0, 1]) {
    const out = augmentBatch(x, N, 2, S, 99, { scale: [0.1, 0.6], hflip });
    for (let i = 0; i < N; i++) {
      const cols = out.subarray(i * 2 * plane, (i * 2 + 1) * plane), rows = out.subarray((i * 2 + 1) * plane, (i * 2 + 2) * plane);
      // the box, read off the ramps: first/last source column and row used
      const left = Math.min(...cols), right = Math.max(...cols), top = Math.min(...rows), bottom = Math.max(...rows);
      const w = right - left + 1, h = bottom - top + 1;
      t.true(Number.isInteger(left) && Number.isInteger(w) && w < S && h < S, `image ${i}: box ${left}+${w} × ${top}+${h}`);
      widths.add(w);
      for (let y = 0; y < S; y++)
        for (let o = 0; o < S; o++) {
          const c = hflip ? S - 1 - o : o;
          t.true(Math.abs(cols[y * S + o] - expected(left, w, c)) < 1e-5, `image ${i} column (${y}, ${o})`);
          t.true(Math.abs(rows[y * S + o] - expected(top, h, y)) < 1e-5, `image ${i} row (${y}, ${o})`);
        }
    }
  }
  t.true(widths.size > 1, 'every crop had the same width');
});

test('augmentBatch: the defaults crop and flip; the input is untouched; a seed repeats', (t) => {
  const N = 8, C = 3, S = 16, x = values(N * C * S * S, 3), before = Float32Array.from(x);
  const a = augmentBatch(x, N, C, S, 5);
  t.deepEqual(x, before);
  t.deepEqual(augmentBatch(x, N, C, S, 5), a);
  t.notDeepEqual(augmentBatch(x, N, C, S, 6), a);
  t.notDeepEqual(a, x);
  // flip decisions: with hflip 0.5 over many images both occur; a mirrored full crop shows it
  let flipped = 0;
  const many = 64, s = 4, y = values(many * s * s, 4);
  const out = augmentBatch(y, many, 1, s, 11, { scale: [1, 1], ratio: [1, 1] });
  for (let i = 0; i < many; i++) if (out[i * s * s] === y[i * s * s + s - 1]) flipped++;
  t.true(flipped > 16 && flipped < 48, `${flipped} of ${many} flipped`);
});

// ---- Beta sampling ------------------------------------------------------------------------------

test('sampleGamma: mean α and variance α (Marsaglia–Tsang, α < 1 by boosting)', (t) => {
  for (const alpha of [0.3, 1, 3.5]) {
    const rand = uniform(17), xs = Array.from({ length: 40000 }, () => sampleGamma(alpha, rand));
    t.true(xs.every((v) => v >= 0 && Number.isFinite(v)));
    // standard error of the mean √(α/n): 0.003–0.009; of the variance well under 5%
    t.true(Math.abs(mean(xs) - alpha) < 6 * Math.sqrt(alpha / xs.length), `α=${alpha}: mean ${mean(xs)}`);
    t.true(Math.abs(variance(xs) / alpha - 1) < 0.08, `α=${alpha}: variance ${variance(xs)}`);
  }
});

test('sampleBeta: means, variances and a CDF value match Beta(a, b)', (t) => {
  const n = 40000;
  for (const [a, b] of [[0.8, 0.8], [1, 1], [0.2, 0.2], [2, 5]]) {
    const rand = uniform(23), xs = Array.from({ length: n }, () => sampleBeta(a, b, rand));
    t.true(xs.every((v) => v >= 0 && v <= 1), `Beta(${a}, ${b}) outside [0, 1]`);
    const m = a / (a + b), v = (a * b) / ((a + b) ** 2 * (a + b + 1));
    t.true(Math.abs(mean(xs) - m) < 6 * Math.sqrt(v / n), `Beta(${a}, ${b}): mean ${mean(xs)}, expected ${m}`);
    t.true(Math.abs(variance(xs) / v - 1) < 0.05, `Beta(${a}, ${b}): variance ${variance(xs)}, expected ${v}`);
  }
  // Beta(2, 5): P(X < 0.2) = P(Binomial(6, 0.2) ≥ 2) = 1 − 0.8⁶ − 6·0.2·0.8⁵ = 0.34464
  const rand = uniform(29), below = Array.from({ length: n }, () => sampleBeta(2, 5, rand)).filter((v) => v < 0.2).length / n;
  t.true(Math.abs(below - 0.34464) < 0.012, `P(X < 0.2) = ${below}`);
});

// ---- Mixup --------------------------------------------------------------------------------------

test('Mixup: the MAE recipe defaults', (t) => {
  const m = new Mixup({ numClasses: 10 });
  t.deepEqual({ ...m }, { numClasses: 10, mixupAlpha: 0.8, cutmixAlpha: 1, prob: 1, switchProb: 0.5, labelSmoothing: 0.1 });
});

test('Mixup: mixup on a tiny batch is lam·x + (1 − lam)·x reversed, targets likewise', (t) => {
  const m = new Mixup({ numClasses: 2, cutmixAlpha: 0, labelSmoothing: 0 });
  const x = Float32Array.from([1, 3]), labels = Int32Array.from([0, 1]);
  const r = m.apply(x, labels, 2, 1, 1, 42);
  const lam = r.lambda;
  t.is(r.mode, 'mixup');
  t.true(lam > 0 && lam < 1);
  t.true(Math.abs(r.images[0] - (lam * 1 + (1 - lam) * 3)) < 1e-6);
  t.true(Math.abs(r.images[1] - (lam * 3 + (1 - lam) * 1)) < 1e-6);
  t.deepEqual(Array.from(r.targets), [lam, 1 - lam, 1 - lam, lam].map(Math.fround));
  t.deepEqual(x, Float32Array.from([1, 3]));
});

test('Mixup: cutmix pastes the reversed batch inside the box, lambda = 1 − box area / area', (t) => {
  const B = 4, C = 2, S = 8, numClasses = 5;
  const m = new Mixup({ numClasses, mixupAlpha: 0 });
  // image b holds 100·b + its pixel offset: every pixel differs from the one of image B−1−b
  const x = Float32Array.from({ length: B * C * S * S }, (_, i) => 100 * Math.floor(i / (C * S * S)) + (i % (C * S * S)) / 1000);
  const labels = Int32Array.from([0, 3, 1, 4]);
  let nonEmpty = 0, clipped = 0;
  for (let seed = 0; seed < 40; seed++) {
    const r = m.apply(x, labels, B, C, S, seed);
    t.is(r.mode, 'cutmix');
    checkMix(t, r, x, labels, B, C, S, numClasses, 0.1);
    const box = r.box!;
    if (box.height * box.width > 0) nonEmpty++;
    if (box.top === 0 || box.left === 0 || box.top + box.height === S || box.left + box.width === S) clipped++;
    // the pixels that changed are exactly the box
    let changed = 0;
    for (let i = 0; i < x.length; i++) if (r.images[i] !== x[i]) changed++;
    t.is(changed, B * C * box.height * box.width);
  }
  t.true(nonEmpty > 20 && clipped > 0, `${nonEmpty} non-empty boxes, ${clipped} at an edge`);
});

test('cutmixBox: timm\'s rand_bbox — side 2·⌊⌊S·√(1 − lam)⌋/2⌋ around a uniform centre, clipped', (t) => {
  const S = 10, rng = xoroshiro128plus(5);
  // lam 0.75: cut ⌊10·0.5⌋ = 5 → half 2 → 4 px; lam 0.6751: cut ⌊5.7⌋ = 5 (truncated, not
  // rounded) → 4 px; lam 0.19: cut 9 → 8 px; lam 0.99: cut 1 → empty
  for (const [lam, side] of [[0.75, 4], [0.6751, 4], [0.19, 8], [0.99, 0]]) {
    const centres = new Set<number>();
    for (let i = 0; i < 300; i++) {
      const box = cutmixBox(S, lam, rng);
      const half = side / 2;
      // some centre cy in [0, S) gives rows [max(cy − half, 0), min(cy + half, S))
      const cy = box.top > 0 ? box.top + half : box.top + box.height - half;
      const cx = box.left > 0 ? box.left + half : box.left + box.width - half;
      t.true(cy >= 0 && cy < S && cx >= 0 && cx < S, `lam ${lam}: box ${JSON.stringify(box)}`);
      t.is(box.height, Math.min(cy + half, S) - Math.max(cy - half, 0));
      t.is(box.width, Math.min(cx + half, S) - Math.max(cx - half, 0));
      centres.add(cy * S + cx);
    }
    if (side > 0) t.true(centres.size > 60, `lam ${lam}: ${centres.size} distinct centres`);
  }
});

test('Mixup: prob 0 or both alphas 0 give the images copied and plain smoothed targets', (t) => {
  const B = 2, C = 1, S = 3, x = values(B * C * S * S, 8), labels = Int32Array.from([1, 2]);
  for (const options of [{ prob: 0 }, { mixupAlpha: 0, cutmixAlpha: 0 }]) {
    const r = new Mixup({ numClasses: 3, ...options }).apply(x, labels, B, C, S, 1);
    t.is(r.mode, 'none');
    t.is(r.lambda, 1);
    t.deepEqual(r.images, x);
    t.not(r.images, x);
    t.deepEqual(r.targets, smoothOneHot(labels, 3, 0.1));
  }
});

test('Mixup: switchProb picks cutmix or mixup; prob mixes that share of batches', (t) => {
  const B = 2, C = 1, S = 4, x = values(B * C * S * S, 9), labels = Int32Array.from([0, 1]);
  const modes = (o: object) => {
    const m = new Mixup({ numClasses: 2, ...o });
    const count = { mixup: 0, cutmix: 0, none: 0 };
    for (let seed = 0; seed < 400; seed++) count[m.apply(x, labels, B, C, S, seed).mode]++;
    return count;
  };
  t.deepEqual(modes({ switchProb: 0 }), { mixup: 400, cutmix: 0, none: 0 });
  t.deepEqual(modes({ switchProb: 1 }), { mixup: 0, cutmix: 400, none: 0 });
  const half = modes({});
  t.true(half.cutmix > 150 && half.mixup > 150, JSON.stringify(half));
  const some = modes({ prob: 0.25 });
  t.true(some.none > 250 && some.none < 350, JSON.stringify(some));
});

test('Mixup: a seed repeats the batch, another seed changes it; inputs untouched', (t) => {
  const B = 6, C = 3, S = 6, x = values(B * C * S * S, 10), labels = Int32Array.from([0, 1, 2, 3, 4, 5]);
  const xs = Float32Array.from(x), ls = Int32Array.from(labels);
  const m = new Mixup({ numClasses: 6 });
  const a = m.apply(x, labels, B, C, S, 1234);
  t.deepEqual(m.apply(x, labels, B, C, S, 1234), a);
  const others = [1235, 1236, 1237].map((s) => m.apply(x, labels, B, C, S, s));
  for (const o of others) t.notDeepEqual(o.images, a.images);
  t.deepEqual(x, xs);
  t.deepEqual(labels, ls);
});

test('Mixup: every result satisfies its mode\'s relation; targets ≥ 0 with rows summing to 1 (property)', (t) => {
  fc.assert(fc.property(
    fc.record({
      seed: fc.nat({ max: 0xffffffff }),
      half: fc.integer({ min: 1, max: 4 }),
      C: fc.integer({ min: 1, max: 3 }),
      S: fc.integer({ min: 1, max: 7 }),
      numClasses: fc.integer({ min: 1, max: 6 }),
      smoothing: fc.double({ min: 0, max: 1, noNaN: true }),
      mixupAlpha: fc.constantFrom(0, 0.1, 0.8, 2),
      cutmixAlpha: fc.constantFrom(0, 0.3, 1),
      prob: fc.constantFrom(0, 0.5, 1),
    }),
    ({ seed, half, C, S, numClasses, smoothing, mixupAlpha, cutmixAlpha, prob }) => {
      const B = 2 * half, x = values(B * C * S * S, seed);
      const labels = Int32Array.from({ length: B }, (_, b) => (seed + 7 * b) % numClasses);
      const r = new Mixup({ numClasses, mixupAlpha, cutmixAlpha, prob, labelSmoothing: smoothing }).apply(x, labels, B, C, S, seed);
      let ok = true;
      const collect = { true: (v: boolean) => { ok &&= v; }, is: (a: unknown, b: unknown) => { ok &&= Object.is(a, b); } };
      checkMix(collect, r, x, labels, B, C, S, numClasses, smoothing);
      if (mixupAlpha === 0 && cutmixAlpha === 0 || prob === 0) ok &&= r.mode === 'none';
      return ok;
    },
  ), { numRuns: 300 });
  t.pass();
});

// ---- bad calls ----------------------------------------------------------------------------------

test('smoothOneHot refuses bad arguments, naming them', (t) => {
  const labels = Int32Array.from([0, 1]);
  t.throws(() => smoothOneHot([0, 1] as unknown as Int32Array, 2, 0), { instanceOf: TypeError, message: /for labels/ });
  t.throws(() => smoothOneHot(labels, 0, 0), { instanceOf: RangeError, message: /for numClasses/ });
  t.throws(() => smoothOneHot(labels, '2' as unknown as number, 0), { instanceOf: TypeError, message: /for numClasses/ });
  t.throws(() => smoothOneHot(labels, 2, 1.5), { instanceOf: RangeError, message: /for smoothing/ });
  t.throws(() => smoothOneHot(labels, 2, Number.NaN), { instanceOf: RangeError, message: /for smoothing/ });
  t.throws(() => smoothOneHot(Int32Array.from([0, 2]), 2, 0), { instanceOf: RangeError, message: /labels\[1\].*received 2/ });
  t.throws(() => smoothOneHot(Int32Array.from([-1]), 2, 0), { instanceOf: RangeError, message: /labels\[0\].*received -1/ });
});

test('augmentBatch refuses bad arguments, naming them', (t) => {
  const x = new Float32Array(2 * 3 * 4 * 4);
  const bad = (f: () => unknown, instanceOf: typeof TypeError | typeof RangeError, message: RegExp) =>
    t.throws(f, { instanceOf, message });
  bad(() => augmentBatch(new Float64Array(96) as unknown as Float32Array, 2, 3, 4, 0), TypeError, /for images/);
  bad(() => augmentBatch(x, 2, 3, 5, 0), RangeError, /for images.*Float32Array\(96\)/);
  bad(() => augmentBatch(x, 0, 3, 4, 0), RangeError, /for count/);
  bad(() => augmentBatch(x, 2, 1.5, 4, 0), RangeError, /for channels/);
  bad(() => augmentBatch(x, 2, 3, '4' as unknown as number, 0), TypeError, /for size/);
  bad(() => augmentBatch(x, 2, 3, 4, -1), RangeError, /for seed/);
  bad(() => augmentBatch(x, 2, 3, 4, 2 ** 32), RangeError, /for seed/);
  bad(() => augmentBatch(x, 2, 3, 4, null as unknown as number), TypeError, /for seed/);
  bad(() => augmentBatch(x, 2, 3, 4, 0, null as unknown as object), TypeError, /for options/);
  bad(() => augmentBatch(x, 2, 3, 4, 0, { flip: 1 } as object), TypeError, /augmentBatch option "flip"/);
  bad(() => augmentBatch(x, 2, 3, 4, 0, { scale: [0.5, 0.2] }), RangeError, /options\.scale\[0\] <= options\.scale\[1\]/);
  bad(() => augmentBatch(x, 2, 3, 4, 0, { scale: [0, 1] }), RangeError, /for options\.scale\[0\]/);
  bad(() => augmentBatch(x, 2, 3, 4, 0, { scale: [0.5, 1.5] }), RangeError, /for options\.scale\[1\]/);
  bad(() => augmentBatch(x, 2, 3, 4, 0, { scale: 0.5 as unknown as [number, number] }), TypeError, /for options\.scale/);
  bad(() => augmentBatch(x, 2, 3, 4, 0, { scale: [0.5] as unknown as [number, number] }), RangeError, /for options\.scale/);
  bad(() => augmentBatch(x, 2, 3, 4, 0, { ratio: [-1, 1] }), RangeError, /for options\.ratio\[0\]/);
  bad(() => augmentBatch(x, 2, 3, 4, 0, { ratio: [1, '2'] as unknown as [number, number] }), TypeError, /for options\.ratio\[1\]/);
  bad(() => augmentBatch(x, 2, 3, 4, 0, { hflip: 2 }), RangeError, /for options\.hflip/);
  bad(() => augmentBatch(x, 2, 3, 4, 0, { hflip: true as unknown as number }), TypeError, /for options\.hflip/);
  t.deepEqual(x, new Float32Array(96));
});

test('Mixup refuses bad options, naming them', (t) => {
  const bad = (o: unknown, instanceOf: typeof TypeError | typeof RangeError, message: RegExp) =>
    t.throws(() => new Mixup(o as { numClasses: number }), { instanceOf, message });
  bad(undefined, TypeError, /for options/);
  bad({}, TypeError, /for numClasses/);
  bad({ numClasses: 0 }, RangeError, /for numClasses/);
  bad({ numClasses: 2.5 }, RangeError, /for numClasses/);
  bad({ numClasses: 2, mixupAlpha: -1 }, RangeError, /for mixupAlpha/);
  bad({ numClasses: 2, cutmixAlpha: Infinity }, RangeError, /for cutmixAlpha/);
  bad({ numClasses: 2, prob: 1.5 }, RangeError, /for prob/);
  bad({ numClasses: 2, switchProb: Number.NaN }, RangeError, /for switchProb/);
  bad({ numClasses: 2, switchProb: '0.5' }, TypeError, /for switchProb/);
  bad({ numClasses: 2, labelSmoothing: 2 }, RangeError, /for labelSmoothing/);
  bad({ numClasses: 2, label_smoothing: 0.1 }, TypeError, /did you mean "labelSmoothing"/);
});

test('Mixup.apply refuses bad batches, naming the argument', (t) => {
  const m = new Mixup({ numClasses: 3 });
  const x = new Float32Array(4 * 2 * 3 * 3), labels = Int32Array.from([0, 1, 2, 0]);
  const bad = (f: () => unknown, instanceOf: typeof TypeError | typeof RangeError, message: RegExp) =>
    t.throws(f, { instanceOf, message });
  bad(() => m.apply(x.subarray(0, 54), labels.subarray(0, 3), 3, 2, 3, 0), RangeError, /even.*for batchSize but received 3/);
  bad(() => m.apply(x, labels, 4, 2, 4, 0), RangeError, /for images/);
  bad(() => m.apply(Array.from(x) as unknown as Float32Array, labels, 4, 2, 3, 0), TypeError, /for images/);
  bad(() => m.apply(x, Uint8Array.from(labels) as unknown as Int32Array, 4, 2, 3, 0), TypeError, /for labels/);
  bad(() => m.apply(x, labels.subarray(0, 2), 4, 2, 3, 0), RangeError, /length batchSize = 4 for labels but received Int32Array\(2\)/);
  bad(() => m.apply(x, Int32Array.from([0, 1, 3, 0]), 4, 2, 3, 0), RangeError, /0\.\.2 for labels\[2\] but received 3/);
  bad(() => m.apply(x, Int32Array.from([0, 1, 2, -5]), 4, 2, 3, 0), RangeError, /labels\[3\]/);
  bad(() => m.apply(x, labels, 0, 2, 3, 0), RangeError, /for batchSize/);
  bad(() => m.apply(x, labels, 4, 0, 3, 0), RangeError, /for channels/);
  bad(() => m.apply(x, labels, 4, 2, 3, 1.5), RangeError, /for seed/);
  bad(() => m.apply(x, labels, 4, 2, 3, '1' as unknown as number), TypeError, /for seed/);
  t.deepEqual(x, new Float32Array(72));
});

test('sampleGamma and sampleBeta refuse non-positive shapes', (t) => {
  const rand = uniform(1);
  t.throws(() => sampleGamma(0, rand), { instanceOf: RangeError, message: /for alpha/ });
  t.throws(() => sampleBeta(0.5, -1, rand), { instanceOf: RangeError, message: /for b / });
  t.throws(() => sampleBeta(Number.NaN, 1, rand), { instanceOf: RangeError, message: /for a / });
});

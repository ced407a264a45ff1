// FineTuner with RandAugment and random erasing (MAE's `--aa rand-m9-mstd0.5-inc1 --reprob 0.25`):
// the batch trained on is crop + flip, then RandAugment on the un-normalized pixels, then random
// erasing, all from the step's seed; a run with both on is bitwise repeatable and a resumed run
// repeats the losses of an uninterrupted one, in memory and from an image folder; the options are
// checked when the fine-tuner is built.
import test from 'ava';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { Classifier, FineTuner, ImageFolder, syntheticShapes, type ClassifierConfig, type FinetuneOptions, type LabelledImageSet } from '../lib/index.js';
import { augmentBatch, randAugment, randomErasing } from '../lib/finetune-data.js';

const tmp = (name: string) => mkdtempSync(path.join(tmpdir(), `emae-ftaug-${name}-`));
const config = (numClasses = 2): ClassifierConfig => ({ imageSize: 16, patchSize: 8, channels: 3, embedDim: 16, depth: 2, numHeads: 2, mlpRatio: 2,
  numClasses, device: 'cpu', threads: 1, seed: 3 });
const recipe = { batchSize: 6, blr: 5e-3, warmupEpochs: 0.5, layerDecay: 1, weightDecay: 0, seed: 4 } as const;
const MAE = { randAugment: {}, randomErasing: 0.25 } as const;
const bits = (xs: number[]) => xs.map((x) => Buffer.from(Float64Array.of(x).buffer).toString('hex'));

async function losses(data: LabelledImageSet | ImageFolder, options: Partial<FinetuneOptions> & { stopAfter?: number; resume?: boolean } = {}): Promise<number[]> {
  const model = await Classifier.create({ ...config(data instanceof ImageFolder ? 3 : 2), dropPath: 0.1 });
  const out: number[] = [];
  const { stopAfter, resume, ...rest } = options;
  const tuner = new FineTuner(model, data, { ...recipe, epochs: 3, ...rest,
    ...(rest.outDir ? { overwrite: !resume } : {}),
    onStep: (s) => { out.push(s.loss); if (s.step === stopAfter) tuner.stop(); } });
  if (resume) await tuner.resume();
  await tuner.run();
  await model.dispose();
  return out;
}

test('the batch trained on is crop + flip, RandAugment, then random erasing, from the step\'s seed', async (t) => {
  // every image the same, so that the batch does not depend on the shuffled order, only on the seed
  const one = syntheticShapes(1, 3, 16, 7);
  const B = 6, per = 3 * 16 * 16;
  const images = new Float32Array(B * per);
  for (let b = 0; b < B; b++) images.set(one.images, b * per);
  const data: LabelledImageSet = { images, count: B, channels: 3, size: 16, labels: Uint8Array.of(0, 1, 0, 1, 0, 1), normalization: one.normalization };
  const model = await Classifier.create(config());
  const seen: Float32Array[] = [];
  const trainStep = model.trainStep.bind(model);
  model.trainStep = (batch, o) => { seen.push(Float32Array.from(batch.images)); return trainStep(batch, o); };
  const ra = { ops: 3, magnitude: 9, magnitudeStd: 0.5, increasing: true };
  await new FineTuner(model, data, { ...recipe, batchSize: B, epochs: 2, mixup: 0, cutmix: 0, randAugment: ra,
    randomErasing: { probability: 0.5, mode: 'pixel', count: 1 } }).run();
  await model.dispose();
  t.is(seen.length, 2);
  for (const [step, got] of seen.entries()) {
    const seed = (Math.imul(recipe.seed + 1, 0x9e3779b1) ^ step) >>> 0;  // the fine-tuner's seed of a step
    const cropped = augmentBatch(images, B, 3, 16, seed, { scale: [0.08, 1] });
    const augmented = randAugment(cropped, B, 3, 16, ra, seed, one.normalization!);
    const erased = randomErasing(augmented.images, B, 3, 16, { probability: 0.5 }, seed);
    t.true(augmented.applied.some((a) => a.length > 0) && erased.boxes.some((b) => b.length > 0), 'both did something');
    t.deepEqual(got, erased.images, `step ${step}`);
  }
});

test('in memory: both on, a run is bitwise repeatable, differs from one without them, and a resume repeats it', async (t) => {
  const data = syntheticShapes(24, 3, 16, 1);
  const a = await losses(data, MAE);
  t.is(a.length, 12);
  t.true(a.every(Number.isFinite));
  t.deepEqual(bits(await losses(data, MAE)), bits(a));
  t.notDeepEqual(bits(await losses(data)), bits(a), 'they change the batches');
  const out = tmp('memory');
  const first = await losses(data, { ...MAE, outDir: out, stopAfter: 5 });
  const rest = await losses(data, { ...MAE, outDir: out, resume: true });
  t.deepEqual(bits([...first, ...rest]), bits(a));
});

test('a folder: both on, a run is bitwise repeatable with or without decode workers and prefetch, and a resume repeats it', async (t) => {
  const root = tmp('folder');
  const colours = [[30, 40, 220], [40, 200, 50], [220, 40, 30]];
  for (const [c, rgb] of colours.entries()) {
    mkdirSync(path.join(root, `c${c}`));
    for (let i = 0; i < 6; i++) {
      const px = Buffer.from(Array.from({ length: 24 * 24 * 3 }, (_, k) => Math.min(255, Math.max(0, rgb[k % 3] + ((k * 37 + i * 11) % 41) - 20))));
      await sharp(px, { raw: { width: 24, height: 24, channels: 3 } }).png().toFile(path.join(root, `c${c}`, `${i}.png`));
    }
  }
  const open = (workers = 0) => ImageFolder.open(root, { size: 16, workers });
  const folder = await open();
  t.deepEqual(folder.normalization, { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
  const a = await losses(folder, MAE);
  t.is(a.length, 9);
  t.deepEqual(bits(await losses(folder, { ...MAE, prefetch: 0 })), bits(a));
  const two = await open(2);
  t.deepEqual(bits(await losses(two, { ...MAE, prefetch: 3 })), bits(a), 'two decode workers');
  await two.dispose();
  t.notDeepEqual(bits(await losses(folder)), bits(a));
  const out = tmp('folder-run');
  const first = await losses(folder, { ...MAE, outDir: out, stopAfter: 4 });
  const rest = await losses(folder, { ...MAE, outDir: out, resume: true });
  t.deepEqual(bits([...first, ...rest]), bits(a));
  await folder.dispose();
});

test('bad RandAugment / random erasing options are refused when the fine-tuner is built, with the option named', async (t) => {
  const data = syntheticShapes(12, 3, 16, 1);
  const model = await Classifier.create(config());
  const make = (o: Partial<FinetuneOptions>) => () => new FineTuner(model, data, { ...recipe, epochs: 1, ...o });
  t.throws(make({ randAugment: { ops: 1.5 } }), { instanceOf: RangeError, message: /randAugment\.ops/ });
  t.throws(make({ randAugment: { m: 9 } as never }), { message: /m/ });
  t.throws(make({ randAugment: 'rand-m9' as never }), { instanceOf: TypeError, message: /randAugment/ });
  t.throws(make({ randomErasing: 2 }), { instanceOf: RangeError, message: /randomErasing/ });
  t.throws(make({ randomErasing: { count: 0 } }), { instanceOf: RangeError, message: /randomErasing\.count/ });
  t.throws(make({ randAugment: {}, normalization: { mean: [0.5], std: [0.5] } }), { instanceOf: RangeError, message: /normalization\.mean/ });
  const { normalization: _, ...unknown } = data;
  t.throws(() => new FineTuner(model, unknown, { ...recipe, epochs: 1, randAugment: {} }), { instanceOf: RangeError, message: /normalization/ });
  t.notThrows(() => new FineTuner(model, unknown, { ...recipe, epochs: 1, randAugment: {}, normalization: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] } }));
  t.notThrows(() => new FineTuner(model, unknown, { ...recipe, epochs: 1, randomErasing: 0.25 }), 'erasing needs no normalization');
  await model.dispose();
});

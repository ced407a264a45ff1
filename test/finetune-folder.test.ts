// Fine-tuning from an image folder (torchvision's ImageFolder layout, decoded as batches are
// drawn): it learns an easy task (classes of differently coloured images), the same seed gives
// bitwise the same losses for any number of decode workers and prefetch depth, a resumed run
// repeats the losses of an uninterrupted one, top-1 on a folder equals top-1 on the same images
// decoded with MAE's eval transform and held in memory, and the folders are checked: classes of
// train and test must match, images must sit in class sub-folders, the class count must be the
// classifier's; unreadable files are reported as the pretraining folder reports them.
import test from 'ava';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { Classifier, FineTuner, ImageFolder, top1Accuracy, type ClassifierConfig, type LabelledImageSet } from '../lib/index.js';

const tmp = (name: string) => mkdtempSync(path.join(tmpdir(), `emae-ftfolder-${name}-`));

// each class a colour, every image 32×32 with its own noise (so no two are alike)
const COLOURS: Record<string, [number, number, number]> = { blue: [30, 40, 220], green: [40, 200, 50], red: [220, 40, 30], yellow: [220, 210, 40] };
async function writeImage(file: string, [r, g, b]: [number, number, number], seed: number): Promise<void> {
  const px = Buffer.alloc(32 * 32 * 3);
  let s = seed * 2654435761 >>> 0 || 1;
  const noise = () => ((s = (s * 1103515245 + 12345) >>> 0) >>> 24) % 61 - 30;
  for (let i = 0; i < 32 * 32; i++) px.set([r + noise(), g + noise(), b + noise()].map((v) => Math.min(255, Math.max(0, v))), 3 * i);
  await sharp(px, { raw: { width: 32, height: 32, channels: 3 } }).png().toFile(file);
}
async function classFolder(name: string, classes: string[], perClass: number, seed: number): Promise<string> {
  const root = tmp(name);
  for (const [c, cls] of classes.entries()) {
    mkdirSync(path.join(root, cls));
    for (let i = 0; i < perClass; i++) await writeImage(path.join(root, cls, `${i}.png`), COLOURS[cls], seed * 1000 + c * 100 + i);
  }
  return root;
}

const CLASSES = ['blue', 'green', 'red'];
let folders: Promise<{ train: string; test: string }> | undefined;
const fixture = () => folders ??= (async () => ({ train: await classFolder('train', CLASSES, 8, 1), test: await classFolder('test', CLASSES, 4, 2) }))();

const config = (numClasses = 3): ClassifierConfig => ({ imageSize: 16, patchSize: 8, channels: 3, embedDim: 16, depth: 2, numHeads: 2, mlpRatio: 2,
  numClasses, device: 'cpu', threads: 1, seed: 3 });
const recipe = { batchSize: 6, blr: 5e-3, warmupEpochs: 0.5, layerDecay: 1, weightDecay: 0 } as const;

test('a folder fine-tune learns coloured classes; the test folder is scored every epoch', async (t) => {
  const { train, test: testDir } = await fixture();
  const data = await ImageFolder.open(train, { size: 16 }), testData = await ImageFolder.open(testDir, { size: 16 });
  const model = await Classifier.create(config());
  const before = await top1Accuracy(model, testData);
  const epochs: Array<{ epoch: number; testTop1?: number }> = [];
  const tuner = new FineTuner(model, data, { ...recipe, epochs: 6, mixup: 0, cutmix: 0, testData, onEpoch: (e) => { epochs.push(e); } });
  t.is(tuner.totalSteps, 6 * 4, '24 images, batch 6: 4 steps an epoch');
  const last = await tuner.run();
  t.is(epochs.length, 6);
  t.true(epochs.every((e) => e.testTop1 !== undefined));
  t.true(before < 0.9, `before training: ${before}`);
  t.true(last!.testTop1! >= 0.9, `top-1 ${last!.testTop1} after 6 epochs (chance 1/3; before training ${before})`);
  t.is(await top1Accuracy(model, testData), last!.testTop1!);
  await model.dispose();
});

// the losses of a short run with mixup/cutmix and drop path on
async function losses(train: string, options: { workers?: number; prefetch?: number; outDir?: string; stopAfter?: number; resume?: boolean; epochs?: number } = {}): Promise<number[]> {
  const data = await ImageFolder.open(train, { size: 16, workers: options.workers ?? 0 });
  const model = await Classifier.create({ ...config(), dropPath: 0.2 });
  const out: number[] = [];
  const tuner = new FineTuner(model, data, { ...recipe, epochs: options.epochs ?? 3, seed: 5, prefetch: options.prefetch ?? 2,
    ...(options.outDir ? { outDir: options.outDir, overwrite: !options.resume } : {}),
    onStep: (s) => { out.push(s.loss); if (s.step === options.stopAfter) tuner.stop(); } });
  if (options.resume) await tuner.resume();
  await tuner.run();
  await model.dispose();
  await data.dispose();
  return out;
}
const bits = (xs: number[]) => xs.map((x) => Buffer.from(Float64Array.of(x).buffer).toString('hex'));

test('the same seed gives bitwise the same losses, for any number of decode workers and prefetch depth', async (t) => {
  const { train } = await fixture();
  const a = await losses(train);
  t.is(a.length, 12);
  t.true(a.every(Number.isFinite));
  t.deepEqual(bits(await losses(train)), bits(a));
  t.deepEqual(bits(await losses(train, { prefetch: 0 })), bits(a), 'no prefetch');
  t.deepEqual(bits(await losses(train, { workers: 2, prefetch: 3 })), bits(a), 'two decode workers, three batches ahead');
});

test('a resumed folder run repeats the losses of an uninterrupted one', async (t) => {
  const { train } = await fixture();
  const whole = await losses(train);
  const out = tmp('resume');
  // stopped mid-epoch 2 with batches of epoch 2 and 3 prefetched, then resumed from its checkpoint
  const first = await losses(train, { outDir: out, stopAfter: 6 });
  t.is(first.length, 6);
  const rest = await losses(train, { outDir: out, resume: true });
  t.deepEqual(bits([...first, ...rest]), bits(whole));
});

test('top-1 on a folder equals top-1 on its images decoded with MAE\'s eval transform and held in memory', async (t) => {
  const { test: testDir } = await fixture();
  const model = await Classifier.create(config());
  const random = await ImageFolder.open(testDir, { size: 16 });
  const all = Int32Array.from({ length: random.count }, (_, i) => i);
  const center = await random.loadBatch(all, 0, { crop: 'center' });
  const inMemory: LabelledImageSet = { images: center.images, labels: Uint8Array.from(center.labels), count: random.count, channels: 3, size: 16 };
  // the initialized model, which gets some right and some wrong: a misplaced label or image shows
  const expected = await top1Accuracy(model, inMemory);
  t.true(expected > 0 && expected < 1, `a score that is neither all right nor all wrong (${expected})`);
  for (const batchSize of [256, 5, 1]) t.is(await top1Accuracy(model, random, batchSize), expected, `batch ${batchSize}`);
  // the known answer: the predictions of the centre crops scored against the class folders
  const logits = await model.predict(center.images);
  const correct = Array.from(center.labels).filter((y, i) => [0, 1, 2].reduce((b, q) => logits[3 * i + q] > logits[3 * i + b] ? q : b, 0) === y).length;
  t.is(expected, correct / random.count);
  const progress: Array<[number, number]> = [];
  await top1Accuracy(model, random, 5, (done, total) => progress.push([done, total]));
  t.deepEqual(progress, [[5, 12], [10, 12], [12, 12]]);
  await model.dispose();
});

test('train and test folders must have the same classes, in the same order', async (t) => {
  const { train } = await fixture();
  const other = await classFolder('other', ['blue', 'green', 'yellow'], 2, 3);
  const model = await Classifier.create(config());
  const data = await ImageFolder.open(train, { size: 16 }), testData = await ImageFolder.open(other, { size: 16 });
  t.throws(() => new FineTuner(model, data, { ...recipe, epochs: 1, testData }), {
    instanceOf: RangeError,
    message: `testData: the classes of the test folder ${other} differ from those of the training folder ${train}: only in the training folder: red; only in the test folder: yellow`,
  });
  await model.dispose();
});

test('images outside class sub-folders, a class count that is not the classifier\'s and a wrong size are refused', async (t) => {
  const flat = tmp('flat');
  for (let i = 0; i < 4; i++) await writeImage(path.join(flat, `${i}.png`), COLOURS.red, i);
  const mixed = await classFolder('mixed', CLASSES, 2, 4);
  await writeImage(path.join(mixed, 'stray.png'), COLOURS.red, 9);
  const { train, test: testDir } = await fixture();
  const model = await Classifier.create(config());
  const open = (dir: string, size = 16) => ImageFolder.open(dir, { size });
  const [flatFolder, trainFolder, mixedFolder, testFolder, big] = [await open(flat), await open(train), await open(mixed), await open(testDir), await open(train, 32)];
  t.throws(() => new FineTuner(model, undefined as never, { ...recipe, epochs: 1 }), { message: /data/ });
  t.throws(() => new FineTuner(model, { count: 1 } as never, { ...recipe, epochs: 1 }), { instanceOf: TypeError, message: /data\.images/ });
  t.throws(() => new FineTuner(model, flatFolder, { batchSize: 2, epochs: 1 }), {
    instanceOf: RangeError,
    message: `data: 4 of the 4 images of ${flat} are not in a class sub-folder (${path.join(flat, '0.png')}) and it has no class sub-folders; ` +
      'fine-tuning reads <root>/<class>/<image>, one sub-folder per class (torchvision\'s ImageFolder layout)',
  });
  t.throws(() => new FineTuner(model, trainFolder, { ...recipe, epochs: 1, testData: mixedFolder }),
    { instanceOf: RangeError, message: new RegExp(`^testData: 1 of the 7 images of ${mixed} are not in a class sub-folder \\(${path.join(mixed, 'stray.png')}\\); fine-tuning reads`) });
  await t.throwsAsync(top1Accuracy(model, flatFolder), { instanceOf: RangeError, message: /not in a class sub-folder/ });
  const four = await Classifier.create(config(4));
  t.throws(() => new FineTuner(four, trainFolder, { ...recipe, epochs: 1 }),
    { instanceOf: RangeError, message: `data: the folder ${train} has 3 class sub-folder(s) (blue, green, red) but the classifier has 4 classes` });
  await t.throwsAsync(top1Accuracy(four, testFolder), { instanceOf: RangeError, message: /has 3 class sub-folder\(s\) \(blue, green, red\) but the classifier has 4 classes/ });
  t.throws(() => new FineTuner(model, big, { ...recipe, epochs: 1 }),
    { instanceOf: RangeError, message: /data: the folder .* loads images of 3 channel\(s\), 32×32, which do not fit the classifier's 3, 16×16/ });
  for (const prefetch of [-1, 1.5])
    t.throws(() => new FineTuner(model, trainFolder, { ...recipe, epochs: 1, prefetch }),
      { instanceOf: RangeError, message: `Expected non-negative integer for prefetch but received ${prefetch}` });
  await model.dispose();
  await four.dispose();
});

test('a resume refuses a folder with other classes than the checkpoint\'s, or another seed, and changes nothing', async (t) => {
  const { train } = await fixture();
  const out = tmp('classes');
  const model = await Classifier.create(config());
  await new FineTuner(model, await ImageFolder.open(train, { size: 16 }), { ...recipe, epochs: 1, outDir: out }).run();
  const renamed = await classFolder('renamed', ['blue', 'green', 'yellow'], 2, 5);
  const again = new FineTuner(model, await ImageFolder.open(renamed, { size: 16 }), { ...recipe, epochs: 2, outDir: out });
  // a refused resume changes nothing: the model keeps its weights and optimizer state
  const fresh = await Classifier.create(config());
  const before = { params: await fresh.stateDict(), optimizer: await fresh.getOptimizerState() };
  const refused = new FineTuner(fresh, await ImageFolder.open(renamed, { size: 16 }), { ...recipe, epochs: 2, outDir: out });
  await t.throwsAsync(refused.resume(), { message: 'resume: the checkpoint was made on a folder with other classes than this run\'s: only in the checkpoint\'s: red; only in this run\'s folder: yellow' });
  t.deepEqual(await fresh.stateDict(), before.params);
  t.deepEqual(await fresh.getOptimizerState(), before.optimizer);
  const otherSeed = new FineTuner(fresh, await ImageFolder.open(train, { size: 16 }), { ...recipe, seed: 99, epochs: 2, outDir: out });
  await t.throwsAsync(otherSeed.resume(), { message: /^resume: the checkpoint was made with seed / });
  t.deepEqual(await fresh.stateDict(), before.params);
  t.is((await fresh.getOptimizerState()).step, 0);
  await fresh.dispose();
  await model.dispose();
});

test('unreadable images are reported once, as pretraining reports them, and the run goes on', async (t) => {
  const root = await classFolder('broken', CLASSES, 3, 6);
  writeFileSync(path.join(root, 'green', 'broken.jpg'), 'not a JPEG');
  const png = await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 200, g: 30, b: 30 } } }).png().toBuffer();
  writeFileSync(path.join(root, 'red', '9-truncated.png'), png.subarray(0, png.length - 20));
  const errors: string[] = [];
  const data = await ImageFolder.open(root, { size: 16, onError: (file, reason) => errors.push(`${path.relative(root, file)}: ${reason}`) });
  t.deepEqual(errors, ['green/broken.jpg: Input file contains unsupported image format'], 'at open, with sharp\'s reason');
  t.is(data.count, 10, 'the broken file left out; the truncated one reads its header');
  const model = await Classifier.create(config());
  const steps: number[] = [];
  await new FineTuner(model, data, { batchSize: 2, epochs: 2, onStep: (s) => { steps.push(s.loss); } }).run();
  t.is(steps.length, 10);
  t.true(steps.every(Number.isFinite));
  t.is(errors.length, 2, 'the truncated PNG once, at its first decode');
  t.regex(errors[1], /^red\/9-truncated\.png: \S/);
  await model.dispose();
});

// The image-folder dataset: class folders → labels, decode of JPEG/PNG/WebP to (B, 3, S, S),
// normalization range, seeded augmentation, crop-box bounds (property test), each broken file is
// reported once with sharp's reason and left out of the count (also by the CLI, and with decode
// workers), and the trainer runs on it. Decode workers and the trainer's prefetch depth: the same
// seed gives bitwise the same batches (pixels, labels, crops) and losses for any number of either,
// the options are validated, and a script that uses workers exits by itself. MAE's evaluation
// transform (crop 'center'): its geometry as torchvision computes it, what it keeps of an image,
// per load or per folder, with or without workers. `limit`: files spread evenly over the classes.
import test from 'ava';
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { EMAE, ImageFolder, Trainer, centerCropGeometry, randomResizedCropBox } from '../lib/index.js';

const root = mkdtempSync(path.join(tmpdir(), 'emae-folder-'));

test.before(async () => {
  const image = (w: number, h: number, r: number, g: number, b: number) =>
    sharp({ create: { width: w, height: h, channels: 3, background: { r, g, b } } });
  mkdirSync(path.join(root, 'cats'));
  mkdirSync(path.join(root, 'dogs'));
  await image(40, 30, 255, 0, 0).png().toFile(path.join(root, 'cats', 'a.png'));
  await image(20, 50, 0, 255, 0).jpeg().toFile(path.join(root, 'cats', 'b.jpg'));
  await image(64, 64, 0, 0, 255).webp().toFile(path.join(root, 'dogs', 'c.webp'));
  writeFileSync(path.join(root, 'dogs', 'broken.jpg'), 'this is not a JPEG');
  writeFileSync(path.join(root, 'dogs', 'notes.txt'), 'ignored');
});

test('class folders give labels; images decode to normalized (B, 3, S, S)', async (t) => {
  const folder = await ImageFolder.open(root, { size: 16, augment: false, onError: () => {} });
  t.deepEqual(folder.classes, ['cats', 'dogs']);
  t.deepEqual(folder.files.map((f) => path.relative(root, f)), ['cats/a.png', 'cats/b.jpg', 'dogs/c.webp'], 'broken.jpg left out');
  t.deepEqual([...folder.labels], [0, 0, 1]);
  const batch = await folder.load(Int32Array.of(0, 2), 1);
  t.is(batch.length, 2 * 3 * 16 * 16);
  // a red image: channel 0 at (1 − 0.485)/0.229, channel 1 at (0 − 0.456)/0.224
  t.true(Math.abs(batch[0] - (1 - 0.485) / 0.229) < 0.02);
  t.true(Math.abs(batch[256] - (0 - 0.456) / 0.224) < 0.02);
  // a blue image: channel 2 high
  t.true(Math.abs(batch[768 + 512] - (1 - 0.406) / 0.225) < 0.05);
});

test('a broken file is reported once, at open, with sharp\'s reason, and left out of the count', async (t) => {
  const errors: string[] = [];
  const folder = await ImageFolder.open(root, { size: 8, onError: (file, reason) => errors.push(`${path.basename(file)}: ${reason}`) });
  t.deepEqual(errors, ['broken.jpg: Input file contains unsupported image format']);
  t.is(folder.count, 3);
  t.deepEqual(folder.unreadable, [{ file: path.join(root, 'dogs', 'broken.jpg'), reason: 'Input file contains unsupported image format' }]);
  for (let epoch = 0; epoch < 3; epoch++) t.true((await folder.load(Int32Array.of(0, 1, 2), epoch)).every(Number.isFinite));
  t.is(errors.length, 1, 'not again on later loads');
});

const truncatedFile = test.macro(async (t, workers: number) => {
  const own = mkdtempSync(path.join(tmpdir(), 'emae-truncated-'));
  const png = await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 1, g: 2, b: 3 } } }).png().toBuffer();
  writeFileSync(path.join(own, 'a-truncated.png'), png.subarray(0, png.length - 20));
  await sharp(Buffer.from(Uint8Array.from({ length: 32 * 32 * 3 }, (_, i) => (i * 5) % 256)), { raw: { width: 32, height: 32, channels: 3 } })
    .png().toFile(path.join(own, 'b-good.png'));
  // a JPEG cut in half fails already at the header: reported at open, with libjpeg's words, once each
  const jpeg = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 9, g: 9, b: 9 } } }).jpeg().toBuffer();
  writeFileSync(path.join(own, 'c-half.jpg'), jpeg.subarray(0, jpeg.length / 2));
  const errors: Array<[string, string]> = [];
  const folder = await ImageFolder.open(own, { size: 8, workers, onError: (file, reason) => errors.push([path.basename(file), reason]) });
  t.is(errors.length, 1);
  t.is(errors[0][0], 'c-half.jpg');
  // libvips keeps its error text in one buffer for all threads, so under concurrent decodes (ava
  // runs this file's tests together) the decoder's lines may be gone: sharp's own prefix stays
  t.regex(errors[0][1], /^Input file has corrupt header/);
  t.false(errors[0][1].includes('\n'), 'libvips\' repeated lines folded into one');
  t.is(folder.count, 2);
  const good = await folder.load(Int32Array.of(1), 0);
  for (let epoch = 0; epoch < 3; epoch++) t.deepEqual(await folder.load(Int32Array.of(0), 0), good, 'the next readable image stands in');
  t.is(errors.length, 2, 'the truncated PNG is reported once, at its first decode');
  t.is(errors[1][0], 'a-truncated.png');
  t.regex(errors[1][1], /\S/, 'sharp\'s message as it gave it (libpng read error, unless another decode cleared it)');
  t.deepEqual(folder.unreadable.map((u) => path.basename(u.file)), ['c-half.jpg', 'a-truncated.png']);
  await folder.dispose();
});
test('a file whose header reads but whose data does not is reported once, with sharp\'s reason, and replaced', truncatedFile, 0);
test('… and so with decode workers', truncatedFile, 2);

test('a folder of only broken files is refused with the first reason', async (t) => {
  const own = mkdtempSync(path.join(tmpdir(), 'emae-allbroken-'));
  writeFileSync(path.join(own, 'x.png'), 'not a PNG');
  writeFileSync(path.join(own, 'y.jpg'), '');
  await t.throwsAsync(ImageFolder.open(own, { size: 8, onError: () => {} }),
    { instanceOf: RangeError, message: /none of the 2 images.*readable.*x\.png: Input file contains unsupported image format/ });
});

test('the CLI reports each broken file once, with the count, and counts only readable images', (t) => {
  const config = path.join(mkdtempSync(path.join(tmpdir(), 'emae-folder-cli-')), 'tiny.json');
  writeFileSync(config, JSON.stringify({ patchSize: 4, embedDim: 16, depth: 1, numHeads: 2, decoderEmbedDim: 16, decoderDepth: 1, decoderNumHeads: 2 }));
  const r = spawnSync(process.execPath, ['--import=tsx', 'lib/cli.ts', 'consistency', '--config', config, '--data', `folder:${root}`,
    '--image-size', '16', '--count', '8', '--draws', '2', '--device', 'cpu', '--threads', '1'], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.is(r.stderr.split('broken.jpg').length - 1, 1, r.stderr);
  t.regex(r.stderr, /Input file contains unsupported image format/);
  t.regex(r.stderr, /3 images.*1 unreadable/);
  t.is(JSON.parse(r.stdout.trim().split('\n').pop()!).images, 3, 'the broken file is not counted');
});

test('augmentation is seeded', async (t) => {
  const folder = await ImageFolder.open(root, { size: 8, onError: () => {} });
  const a = await folder.load(Int32Array.of(0, 1, 3), 11), b = await folder.load(Int32Array.of(0, 1, 3), 11);
  t.deepEqual(a, b);
  // a uniform image looks the same under any crop; a patterned one (in its own folder, since the
  // tests of this file run concurrently) shows that different seeds crop differently
  const own = mkdtempSync(path.join(tmpdir(), 'emae-pattern-'));
  await sharp(Buffer.from(Uint8Array.from({ length: 40 * 30 * 3 }, (_, i) => (i * 7) % 256)), { raw: { width: 40, height: 30, channels: 3 } })
    .png().toFile(path.join(own, 'pattern.png'));
  const patterned = await ImageFolder.open(own, { size: 8 });
  const c = await patterned.load(Int32Array.of(0), 1), d = await patterned.load(Int32Array.of(0), 2);
  t.notDeepEqual(c, d);
});

test('the centre crop has the geometry of MAE\'s eval transform (torchvision Resize(size/crop_pct) + CenterCrop)', (t) => {
  // 224: the short side to int(224 / (224/256)) = 256, the long side int(256·500/375) = 341,
  // left round((341 − 224)/2) = round(58.5) = 58 (Python rounds halves to even), top 16
  t.deepEqual(centerCropGeometry(500, 375, 224), { resized: { width: 341, height: 256 }, left: 58, top: 16 });
  t.deepEqual(centerCropGeometry(375, 500, 224), { resized: { width: 256, height: 341 }, left: 16, top: 58 });
  // above 224 crop_pct is 1: the short side to the size itself
  t.deepEqual(centerCropGeometry(300, 400, 256), { resized: { width: 256, height: 341 }, left: 0, top: 42 });
  // 16: int(16 / 0.875) = 18; 40×30 → 24×18, left 4, top 1
  t.deepEqual(centerCropGeometry(40, 30, 16), { resized: { width: 24, height: 18 }, left: 4, top: 1 });
  t.deepEqual(centerCropGeometry(21, 18, 16), { resized: { width: 21, height: 18 }, left: 2, top: 1 }, 'round(2.5) = 2');
  t.deepEqual(centerCropGeometry(18, 25, 16), { resized: { width: 18, height: 25 }, left: 1, top: 4 }, 'round(4.5) = 4');
  t.deepEqual(centerCropGeometry(18, 27, 16), { resized: { width: 18, height: 27 }, left: 1, top: 6 }, 'round(5.5) = 6');
});

// a 48×32 image: red bands 6 px wide at the left and right, blue between them
const bandedImage = async (dir: string) => {
  const w = 48, h = 32, px = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) px.set(x < 6 || x >= w - 6 ? [255, 0, 0] : [0, 0, 255], (y * w + x) * 3);
  await sharp(px, { raw: { width: w, height: h, channels: 3 } }).png().toFile(path.join(dir, 'banded.png'));
};

test('crop \'center\' keeps the middle of the image, the same for every seed, per folder or per load, with or without workers', async (t) => {
  const own = mkdtempSync(path.join(tmpdir(), 'emae-center-'));
  await bandedImage(own);
  const S = 16, plane = S * S;
  const red = (x: Float32Array, p: number) => x[p] > 0;  // normalized red channel above the mean
  const center = await ImageFolder.open(own, { size: S, crop: 'center' });
  t.is(center.crop, 'center');
  const a = await center.loadBatch(Int32Array.of(0), 1);
  // 48×32 → 27×18 (short side int(16/0.875) = 18), then columns 5.5→6.. of 27: the source's
  // columns 10.7..39.1 of 48, inside the blue; the red bands (0..6, 42..48) are cut away
  for (let p = 0; p < plane; p++) t.false(red(a.images, p), `pixel ${p} is blue`);
  t.deepEqual(a.crops[0], { index: 0, left: Math.round(6 * 48 / 27), top: Math.round(1 * 32 / 18), width: Math.round(16 * 48 / 27), height: Math.round(16 * 32 / 18), flip: false });
  t.deepEqual((await center.loadBatch(Int32Array.of(0), 99)).images, a.images, 'no random draw');
  // the whole image keeps the bands at both edges
  const whole = await ImageFolder.open(own, { size: S, crop: 'whole' });
  const w = await whole.load(Int32Array.of(0), 1);
  t.true(red(w, 0) && red(w, S - 1), 'the whole image resized shows both red bands');
  // a folder opened for training gives the same centre crop when a load asks for it
  const random = await ImageFolder.open(own, { size: S });
  t.deepEqual((await random.loadBatch(Int32Array.of(0), 5, { crop: 'center' })).images, a.images);
  t.notDeepEqual((await random.loadBatch(Int32Array.of(0), 5)).crops, a.crops, 'and its own crop otherwise');
  const workers = await ImageFolder.open(own, { size: S, workers: 2 });
  t.deepEqual(bytes((await workers.loadBatch(Int32Array.of(0, 0), 3, { crop: 'center' })).images), bytes(Float32Array.from([...a.images, ...a.images])));
  // a load's scale: the whole area of a 3:2 image fits no aspect ratio in 3/4..4/3, so every draw
  // falls back to torchvision's central 4:3 box, 43×32 at left ⌊(48 − 43)/2⌋ = 2
  const { index, left, top, width, height } = (await random.loadBatch(Int32Array.of(0), 5, { scale: [1, 1] })).crops[0];
  t.deepEqual({ index, left, top, width, height }, { index: 0, left: 2, top: 0, width: 43, height: 32 });
  await workers.dispose();
});

test('crop and a load\'s transform are validated', async (t) => {
  await t.throwsAsync(ImageFolder.open(root, { size: 8, crop: 'middle' as 'center' }),
    { instanceOf: RangeError, message: `Expected one of 'random', 'center', 'whole' for crop but received "middle"` });
  await t.throwsAsync(ImageFolder.open(root, { size: 8, crop: 1 as unknown as 'center' }), { instanceOf: TypeError, message: /for crop but received 1/ });
  await t.throwsAsync(ImageFolder.open(root, { size: 8, crop: 'center', augment: true }), { instanceOf: RangeError, message: /augment true contradicts crop 'center'/ });
  await t.throwsAsync(ImageFolder.open(root, { size: 8, scale: [0.5, 0.2] }), { instanceOf: RangeError, message: /for scale/ });
  t.is((await ImageFolder.open(root, { size: 8, augment: false, onError: () => {} })).crop, 'whole');
  const folder = await ImageFolder.open(root, { size: 8, onError: () => {} });
  await t.throwsAsync(folder.loadBatch(Int32Array.of(0), 0, { crop: 'centre' as 'center' }), { instanceOf: RangeError, message: /for transform\.crop/ });
  await t.throwsAsync(folder.loadBatch(Int32Array.of(0), 0, { scale: [0, 1] }), { instanceOf: RangeError, message: /for transform\.scale/ });
  await t.throwsAsync(folder.loadBatch(Int32Array.of(0), 0, { flip: false } as never), { instanceOf: TypeError, message: /Unknown transform option "flip"/ });
});

test('limit takes files evenly over the classes, before the headers are read, in the folder\'s order', async (t) => {
  const own = mkdtempSync(path.join(tmpdir(), 'emae-limit-'));
  const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 9, g: 9, b: 9 } } }).png().toBuffer();
  const files = ['top.png', 'a/1.png', 'a/2.png', 'a/3.png', 'b/1.png', 'c/1.png', 'c/2.png', 'c/3.png'];
  for (const f of files) {
    mkdirSync(path.dirname(path.join(own, f)), { recursive: true });
    writeFileSync(path.join(own, f), png);
  }
  writeFileSync(path.join(own, 'c', '0-broken.png'), 'not a PNG');
  const names = async (limit: number) => {
    const errors: string[] = [];
    const f = await ImageFolder.open(own, { size: 8, limit, onError: (file) => errors.push(path.relative(own, file)) });
    return { files: f.files.map((x) => path.relative(own, x)), labels: [...f.labels], errors };
  };
  // round 1: top, a/1, b/1, c/0-broken; round 2: a/2, c/1; … the broken one is left out of the count
  t.deepEqual(await names(6), { files: ['top.png', 'a/1.png', 'a/2.png', 'b/1.png', 'c/1.png'], labels: [-1, 0, 0, 1, 2], errors: ['c/0-broken.png'] });
  t.deepEqual((await names(3)).files, ['top.png', 'a/1.png', 'b/1.png'], 'no header read beyond the limit');
  t.deepEqual((await names(3)).errors, []);
  t.deepEqual((await names(100)).files, files.map((f) => f).sort((x, y) => (x.includes('/') ? 1 : 0) - (y.includes('/') ? 1 : 0) || x.localeCompare(y)));
  for (const limit of [0, 1.5, -2])
    await t.throwsAsync(ImageFolder.open(own, { size: 8, limit }), { instanceOf: RangeError, message: `Expected positive integer for limit but received ${limit}` });
});

test('RandomResizedCrop boxes stay inside the image with scale and ratio in range (or the fallback)', (t) => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 500 }), fc.integer({ min: 1, max: 500 }), fc.integer(), (w, h, seed) => {
    let s = seed >>> 0 || 1;
    const rand = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const box = randomResizedCropBox(w, h, [0.2, 1], [3 / 4, 4 / 3], rand);
    return box.left >= 0 && box.top >= 0 && box.width >= 1 && box.height >= 1 &&
      box.left + box.width <= w && box.top + box.height <= h;
  }));
  t.pass();
});

test('bad folders are clear errors', async (t) => {
  const empty = mkdtempSync(path.join(tmpdir(), 'emae-empty-'));
  await t.throwsAsync(ImageFolder.open(empty, { size: 8 }), { instanceOf: RangeError, message: /no JPEG, PNG or WebP/ });
  await t.throwsAsync(ImageFolder.open(root, { size: 0 }), { instanceOf: RangeError, message: /size/ });
});

test('the trainer runs on an image folder', async (t) => {
  const folder = await ImageFolder.open(root, { size: 16, onError: () => {} });
  const model = await EMAE.create({ imageSize: 16, patchSize: 4, embedDim: 16, depth: 1, numHeads: 2, decoderEmbedDim: 16,
    decoderDepth: 1, decoderNumHeads: 2, device: 'cpu', threads: 1 });
  const losses: number[] = [];
  await new Trainer(model, folder, { batchSize: 2, steps: 3, blr: 1e-2, onStep: (s) => { losses.push(s.loss); } }).run();
  t.is(losses.length, 3);
  t.true(losses.every(Number.isFinite));
  await model.dispose();
});

// A folder with texture (so that every crop shows), several sizes and formats, a broken file
// (left out at open) and a truncated PNG (fails at its decode and is replaced): made once.
let mixed: Promise<string> | undefined;
const mixedFolder = () => mixed ??= (async () => {
  const own = mkdtempSync(path.join(tmpdir(), 'emae-mixed-'));
  for (const cls of ['a', 'b']) mkdirSync(path.join(own, cls));
  for (let i = 0; i < 12; i++) {
    const w = 30 + 7 * i, h = 50 - 2 * i, channels = i % 4 === 3 ? 4 : 3;
    const px = Buffer.from(Uint8Array.from({ length: w * h * channels }, (_, k) => (k * (5 + i) + i * 31) % 256));
    const img = sharp(px, { raw: { width: w, height: h, channels } });
    const file = path.join(own, i % 2 ? 'b' : 'a', `${i}`);
    await (i % 3 === 0 ? img.png().toFile(`${file}.png`) : i % 3 === 1 ? img.jpeg().toFile(`${file}.jpg`) : img.webp().toFile(`${file}.webp`));
  }
  const png = await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 1, g: 2, b: 3 } } }).png().toBuffer();
  writeFileSync(path.join(own, 'a', '5b-truncated.png'), png.subarray(0, png.length - 20));
  writeFileSync(path.join(own, 'b', 'broken.jpg'), 'not a JPEG');
  return own;
})();
const bytes = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);

test('the same seed gives bitwise the same batches (pixels, labels, crops) for any number of decode workers', async (t) => {
  const dir = await mixedFolder();
  const batches = Array.from({ length: 4 }, (_, k) => Int32Array.from({ length: 9 }, (_, i) => (k * 5 + i * 7) % 12));
  const seeds = [0, 7, 123_456_789, -3];
  const results: Array<{ workers: number; errors: string[]; loaded: Array<Awaited<ReturnType<ImageFolder['loadBatch']>>> }> = [];
  for (const workers of [0, 1, 2, 3]) {
    const errors: string[] = [];
    const folder = await ImageFolder.open(dir, { size: 12, workers, onError: (file) => errors.push(path.basename(file)) });
    t.is(folder.workers, workers);
    // the batches in flight together, as with the trainer's prefetch
    const loaded = await Promise.all(batches.map((indices, k) => folder.loadBatch(indices, seeds[k])));
    results.push({ workers, errors, loaded });
    await folder.dispose();
  }
  const [first, ...others] = results;
  t.true(first.loaded.some((b) => b.crops.some((c) => c.flip)) && first.loaded.some((b) => b.crops.some((c) => !c.flip)), 'both flips drawn');
  t.true(first.loaded.some((b) => b.crops.some((c, i) => c.index !== b.crops[i].index || c.width < 30)), 'crops drawn');
  const truncated = first.loaded[0].crops.length;  // the truncated PNG's index is stood in for by the next file
  t.true(truncated > 0);
  for (const r of others) {
    t.deepEqual(r.errors, first.errors, `workers ${r.workers}: the same files reported, once each`);
    for (const [k, b] of r.loaded.entries()) {
      t.true(bytes(b.images).equals(bytes(first.loaded[k].images)), `workers ${r.workers}, batch ${k}: the same pixels, bit for bit`);
      t.deepEqual(b.labels, first.loaded[k].labels, `workers ${r.workers}, batch ${k}: labels`);
      t.deepEqual(b.crops, first.loaded[k].crops, `workers ${r.workers}, batch ${k}: crops`);
    }
  }
  t.deepEqual(first.errors, ['broken.jpg', '5b-truncated.png']);
  // without the check at open the sizes are read at the first decode, and kept: the same batches
  const unverified = await Promise.all([0, 2].map((workers) => ImageFolder.open(dir, { size: 12, workers, verify: false, onError: () => {} })));
  const indices = Int32Array.from({ length: 14 }, (_, i) => i);
  const loads = [];
  for (const f of [...unverified, ...unverified]) loads.push(await f.loadBatch(indices, 9));
  for (const l of loads.slice(1)) {
    t.true(bytes(l.images).equals(bytes(loads[0].images)), 'verify: false, workers 0 and 2, first and second load');
    t.deepEqual(l.crops, loads[0].crops);
  }
  await Promise.all(unverified.map((f) => f.dispose()));
  // a file index whose decode fails is replaced by the next one, whose label it then carries
  const folder = await ImageFolder.open(dir, { size: 12, workers: 2, onError: () => {} });
  const bad = folder.files.findIndex((f) => f.endsWith('5b-truncated.png'));
  const b = await folder.loadBatch(Int32Array.of(bad), 1);
  t.is(b.crops[0].index, bad + 1);
  t.is(b.labels[0], folder.labels[bad + 1]);
  t.true(bytes(b.images).equals(bytes(await folder.load(Int32Array.of(bad + 1), 1))));
  await folder.dispose();
});

test('the trainer gives bitwise the same batches and losses for any number of workers and prefetch depth', async (t) => {
  const dir = await mixedFolder();
  const config = { imageSize: 16, patchSize: 4, embedDim: 16, depth: 1, numHeads: 2, decoderEmbedDim: 16, decoderDepth: 1,
    decoderNumHeads: 2, device: 'cpu' as const, threads: 1, seed: 3 };
  const runs: Array<{ label: string; loads: string[]; losses: number[] }> = [];
  for (const [workers, prefetch] of [[0, 0], [0, 1], [2, 2], [3, 4]]) {
    const folder = await ImageFolder.open(dir, { size: 16, workers, onError: () => {} });
    const loads: string[] = [];
    // the source records every batch asked for: indices, seed and a digest of the pixels
    const source = {
      count: folder.count,
      load: async (indices: Int32Array, seed: number) => {
        const at = loads.push(`${[...indices]}|${seed}`) - 1;  // in the order asked for
        const images = await folder.load(indices, seed);
        loads[at] += `|${createHash('sha256').update(bytes(images)).digest('hex')}`;
        return images;
      },
    };
    const model = await EMAE.create(config);
    const losses: number[] = [];
    // 3 images a batch, 2 micro-batches a step, 5 steps: 30 images, past the end of the first epoch (13 images)
    await new Trainer(model, source, { batchSize: 3, accumulate: 2, steps: 5, blr: 1e-2, prefetch, onStep: (s) => { losses.push(s.loss); } }).run();
    runs.push({ label: `workers ${workers}, prefetch ${prefetch}`, loads, losses });
    await model.dispose();
    await folder.dispose();
  }
  const [first, ...others] = runs;
  t.is(first.loads.length, 10, 'no batch loaded beyond the last step');
  for (const r of others) {
    t.deepEqual(r.loads, first.loads, `${r.label}: the same batches in the same order`);
    t.deepEqual(r.losses, first.losses, `${r.label}: the same losses`);
  }
});

test('workers and prefetch are validated', async (t) => {
  for (const workers of [-1, 1.5, Number.NaN, Infinity])
    await t.throwsAsync(ImageFolder.open(root, { size: 8, workers }),
      { instanceOf: RangeError, message: new RegExp(`^Expected non-negative integer .*for workers but received ${workers}$`) });
  await t.throwsAsync(ImageFolder.open(root, { size: 8, workers: '2' as unknown as number }),
    { instanceOf: TypeError, message: /for workers but received "2"$/ });
  const folder = await ImageFolder.open(root, { size: 16, onError: () => {} });
  const model = await EMAE.create({ imageSize: 16, patchSize: 4, embedDim: 16, depth: 1, numHeads: 2, decoderEmbedDim: 16,
    decoderDepth: 1, decoderNumHeads: 2, device: 'cpu', threads: 1 });
  for (const prefetch of [-1, 0.5])
    t.throws(() => new Trainer(model, folder, { batchSize: 2, steps: 1, prefetch }),
      { instanceOf: RangeError, message: `Expected non-negative integer for prefetch but received ${prefetch}` });
  t.throws(() => new Trainer(model, folder, { batchSize: 2, steps: 1, prefetch: '1' as unknown as number }),
    { instanceOf: TypeError, message: 'Expected non-negative integer for prefetch but received "1"' });
  await model.dispose();
});

test('a disposed folder ends its workers and refuses loads; dispose waits for the decodes in flight', async (t) => {
  const folder = await ImageFolder.open(root, { size: 8, workers: 2, onError: () => {} });
  const loading = folder.load(Int32Array.of(0, 1, 2), 5);
  await folder.load(Int32Array.of(0), 1);
  const second = folder.load(Int32Array.of(2, 1, 0), 6);
  await folder.dispose();
  await folder.dispose();  // twice is fine
  t.true((await loading).every(Number.isFinite));
  // the second batch's images were in flight or still queued: it resolves or says why not
  await second.then((x) => t.is(x.length, 3 * 3 * 64), (err: Error) => t.regex(err.message, /disposed/));
  await t.throwsAsync(folder.load(Int32Array.of(0), 1), { message: /disposed/ });
});

test('a script that uses decode workers exits by itself, disposed or not, also when a run stops with batches in flight', (t) => {
  const script = path.join(mkdtempSync(path.join(tmpdir(), 'emae-exit-')), 'script.mts');
  const lib = JSON.stringify(path.resolve('lib/index.ts'));
  writeFileSync(script, `
    import { EMAE, ImageFolder, Trainer } from ${lib};
    const [dir, mode] = process.argv.slice(2);
    const folder = await ImageFolder.open(dir, { size: 16, workers: 2, onError: () => {} });
    const first = await folder.load(Int32Array.of(0, 1, 2), 1);
    if (mode === 'train') {
      const model = await EMAE.create({ imageSize: 16, patchSize: 4, embedDim: 16, depth: 1, numHeads: 2, decoderEmbedDim: 16,
        decoderDepth: 1, decoderNumHeads: 2, device: 'cpu', threads: 1 });
      // stopped after the first step with 4 batches prefetched
      const trainer = new Trainer(model, folder, { batchSize: 2, steps: 50, prefetch: 4, onStep: () => trainer.stop() });
      await trainer.run();
      await model.dispose();
    }
    if (mode === 'dispose') await folder.dispose();
    console.log('done', first.length);
  `);
  for (const mode of ['no-dispose', 'dispose', 'train']) {
    const started = Date.now();
    const r = spawnSync(process.execPath, ['--import=tsx', script, root, mode], { encoding: 'utf8', timeout: 120_000 });
    t.is(r.signal, null, `${mode}: exited by itself (not killed after ${Date.now() - started} ms)`);
    t.is(r.status, 0, `${mode}: ${r.stderr}`);
    t.is(r.stdout.trim(), `done ${3 * 3 * 16 * 16}`, mode);
  }
});

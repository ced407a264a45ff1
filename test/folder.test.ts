// The image-folder dataset: class folders → labels, decode of JPEG/PNG/WebP to (B, 3, S, S),
// normalization range, seeded augmentation, crop-box bounds (property test), each broken file is
// reported once with sharp's reason and left out of the count (also by the CLI), and the trainer
// runs on it.
import test from 'ava';
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { EMAE, ImageFolder, Trainer, randomResizedCropBox } from '../lib/index.js';

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

test('a file whose header reads but whose data does not is reported once, with sharp\'s reason, and replaced', async (t) => {
  const own = mkdtempSync(path.join(tmpdir(), 'emae-truncated-'));
  const png = await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 1, g: 2, b: 3 } } }).png().toBuffer();
  writeFileSync(path.join(own, 'a-truncated.png'), png.subarray(0, png.length - 20));
  await sharp(Buffer.from(Uint8Array.from({ length: 32 * 32 * 3 }, (_, i) => (i * 5) % 256)), { raw: { width: 32, height: 32, channels: 3 } })
    .png().toFile(path.join(own, 'b-good.png'));
  // a JPEG cut in half fails already at the header: reported at open, with libjpeg's words, once each
  const jpeg = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 9, g: 9, b: 9 } } }).jpeg().toBuffer();
  writeFileSync(path.join(own, 'c-half.jpg'), jpeg.subarray(0, jpeg.length / 2));
  const errors: Array<[string, string]> = [];
  const folder = await ImageFolder.open(own, { size: 8, onError: (file, reason) => errors.push([path.basename(file), reason]) });
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
});

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

// Dataset readers: IDX (plain and gzip) and CIFAR-10 binary files written here, padding,
// normalization and labels; broken files are clear errors; the synthetic set is seeded.
import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { loadCifar10, loadIdx, parseIdx, syntheticShapes } from '../lib/data.js';

const dir = mkdtempSync(path.join(tmpdir(), 'emae-data-'));

function idx(dims: number[], data: Uint8Array): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header.writeUInt8(0x08, 2);
  header.writeUInt8(dims.length, 3);
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, Buffer.from(data)]);
}

test('IDX images and labels, gzip or not, normalized and padded', async (t) => {
  const pixels = Uint8Array.from({ length: 2 * 3 * 3 }, (_, i) => i * 10);
  writeFileSync(path.join(dir, 'img.idx'), idx([2, 3, 3], pixels));
  writeFileSync(path.join(dir, 'img.idx.gz'), gzipSync(idx([2, 3, 3], pixels)));
  writeFileSync(path.join(dir, 'lab.idx'), idx([2], Uint8Array.of(7, 3)));
  for (const f of ['img.idx', 'img.idx.gz']) {
    const set = await loadIdx(path.join(dir, f), { labelsFile: path.join(dir, 'lab.idx'), padTo: 5 });
    t.is(set.count, 2);
    t.is(set.size, 5);
    t.is(set.channels, 1);
    t.deepEqual([...set.labels!], [7, 3]);
    t.is(set.images.length, 2 * 25);
    // pixel (0, 0) of image 0 sits at (1, 1) after padding; default normalization (x/255 − 0.5)/0.5
    t.true(Math.abs(set.images[1 * 5 + 1] - (0 / 255 - 0.5) / 0.5) < 1e-6);
    t.true(Math.abs(set.images[25 + 3 * 5 + 3] - (170 / 255 - 0.5) / 0.5) < 1e-6, 'last pixel of image 1');
    t.is(set.images[0], -1, 'padding is black');
  }
});

test('broken IDX files are clear errors', async (t) => {
  t.throws(() => parseIdx(Uint8Array.of(1, 2, 3, 4)), { instanceOf: RangeError, message: /bad magic/ });
  t.throws(() => parseIdx(idx([2, 3, 3], new Uint8Array(17))), { instanceOf: RangeError, message: /expected 18 bytes/ });
  const floats = idx([1], new Uint8Array(1));
  floats[2] = 0x0d;
  t.throws(() => parseIdx(floats), { instanceOf: RangeError, message: /not unsigned byte/ });
  writeFileSync(path.join(dir, 'rect.idx'), idx([1, 2, 3], new Uint8Array(6)));
  await t.throwsAsync(loadIdx(path.join(dir, 'rect.idx')), { message: /square/ });
  writeFileSync(path.join(dir, 'img1.idx'), idx([1, 2, 2], new Uint8Array(4)));
  writeFileSync(path.join(dir, 'lab2.idx'), idx([2], new Uint8Array(2)));
  await t.throwsAsync(loadIdx(path.join(dir, 'img1.idx'), { labelsFile: path.join(dir, 'lab2.idx') }), { message: /2 labels for 1 images/ });
  await t.throwsAsync(loadIdx(path.join(dir, 'img1.idx'), { padTo: 1 }), { instanceOf: RangeError, message: /padTo/ });
});

test('CIFAR-10 binary records: labels, channel order and normalization', async (t) => {
  const rec = Buffer.alloc(2 * 3073);
  rec[0] = 4;
  rec[3073] = 9;
  rec[1 + 1024] = 255;  // image 0, channel 1 (green), pixel (0, 0)
  writeFileSync(path.join(dir, 'data_batch_1.bin'), rec);
  const set = await loadCifar10([path.join(dir, 'data_batch_1.bin')]);
  t.is(set.count, 2);
  t.deepEqual([...set.labels!], [4, 9]);
  t.true(Math.abs(set.images[1024] - (1 - 0.4822) / 0.2435) < 1e-5);
  t.true(Math.abs(set.images[0] - (0 - 0.4914) / 0.247) < 1e-5);
  writeFileSync(path.join(dir, 'bad.bin'), Buffer.alloc(3000));
  await t.throwsAsync(loadCifar10([path.join(dir, 'bad.bin')]), { instanceOf: RangeError, message: /whole number of CIFAR-10 records/ });
});

test('synthetic shapes are seeded', (t) => {
  const a = syntheticShapes(4, 3, 8, 1), b = syntheticShapes(4, 3, 8, 1), c = syntheticShapes(4, 3, 8, 2);
  t.deepEqual(a.images, b.images);
  t.notDeepEqual(a.images, c.images);
  t.is(a.images.length, 4 * 3 * 64);
  t.throws(() => syntheticShapes(0, 3, 8), { instanceOf: RangeError });
});

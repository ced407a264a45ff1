// Does the data pipeline keep up? Images/s of the image-folder loader (JPEG decode +
// RandomResizedCrop + flip + normalize, batches decoded in parallel on libuv's pool) next to the
// CPU training step's images/s, on this machine, in the same run.
//   node --import=tsx bench/loader.ts [--images 256] [--batches 8] [--batch 32]
import { mkdirSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { EMAE, ImageFolder, ParallelMasker } from '../lib/index.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}
const count = Number(arg('images', '256')), batches = Number(arg('batches', '8')), B = Number(arg('batch', '32'));

const dir = mkdtempSync(path.join(os.tmpdir(), 'emae-loader-'));
mkdirSync(path.join(dir, 'all'));
for (let i = 0; i < count; i++) {  // ImageNet-like JPEGs: 400×300 with texture
  const w = 400, h = 300, px = Buffer.alloc(w * h * 3);
  for (let p = 0; p < w * h; p++) px.set([(p * 7 + i) % 256, ((p >> 3) + i * 5) % 256, (p * 13) % 256], p * 3);
  await sharp(px, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 85 }).toFile(path.join(dir, 'all', `${i}.jpg`));
}

const rows: string[] = [];
for (const size of [224, 32]) {
  const folder = await ImageFolder.open(dir, { size });
  const t0 = performance.now();
  for (let b = 0; b < batches; b++)
    await folder.load(Int32Array.from({ length: B }, (_, i) => (b * B + i) % count), b);
  const ips = (batches * B) / ((performance.now() - t0) / 1000);
  rows.push(`| folder loader, 400×300 JPEG → ${size}×${size} | ${ips.toFixed(0)} |`);
}
{
  const model = await EMAE.create({ preset: 'cpu-tiny', device: 'cpu' });
  const c = model.config, masker = ParallelMasker.fromConfig(c, 1);
  const images = Float32Array.from({ length: B * c.channels * c.imageSize * c.imageSize }, () => Math.random() - 0.5);
  await model.trainStep({ images, permutation: masker.next(B), batchSize: B }, { lr: 1e-4 });  // warm-up
  const t0 = performance.now(), steps = 3;
  for (let s = 0; s < steps; s++) await model.trainStep({ images, permutation: masker.next(B), batchSize: B }, { lr: 1e-4 });
  rows.push(`| CPU training step, cpu-tiny (32², K = 4, batch ${B}) | ${((steps * B) / ((performance.now() - t0) / 1000)).toFixed(0)} |`);
  await model.dispose();
}
console.log(`${os.cpus()[0]?.model}, ${os.availableParallelism()} logical CPUs, UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? 4}`);
console.log('| stage | images/s |\n|---|---|\n' + rows.join('\n'));

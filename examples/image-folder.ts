// EMAE pretraining on a folder of JPEG/PNG/WebP images (class sub-folders optional), decoded and
// augmented with sharp as MAE does (RandomResizedCrop 0.2–1, flip, ImageNet normalization).
//   node --import=tsx examples/image-folder.ts [DIR] [--size 64] [--steps 100] [--batch 16] [--out runs/folder]
// Without DIR it first writes a small demo folder of generated pictures to try it on.
// (In your project: import { … } from 'emae'.)
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { EMAE, ImageFolder, Trainer } from '../lib/index.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}
let dir = process.argv[2] && !process.argv[2].startsWith('--') ? process.argv[2] : '';
if (!dir) {
  dir = mkdtempSync(path.join(tmpdir(), 'emae-demo-'));
  for (const cls of ['stripes', 'circles']) mkdirSync(path.join(dir, cls));
  for (let i = 0; i < 48; i++) {
    const w = 80 + (i % 5) * 10, h = 64 + (i % 3) * 12, cls = i % 2 ? 'stripes' : 'circles';
    const pixels = Buffer.alloc(w * h * 3);
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const v = cls === 'stripes' ? Math.sin((x + i * 3) / (3 + (i % 4))) : Math.sin(Math.hypot(x - w / 2, y - h / 2) / (2 + (i % 3)));
        pixels.set([128 + 127 * v, (64 + i * 4) % 256, 128 - 127 * v].map(Math.round), (y * w + x) * 3);
      }
    await sharp(pixels, { raw: { width: w, height: h, channels: 3 } }).jpeg().toFile(path.join(dir, cls, `${i}.jpg`));
  }
  console.log(`no folder given: wrote 48 demo images to ${dir}`);
}
const size = Number(arg('size', '64'));
const folder = await ImageFolder.open(dir, { size });
console.log(`${folder.count} images in ${folder.classes.length} classes (${folder.classes.join(', ') || 'none'})`);
const model = await EMAE.create({
  imageSize: size, patchSize: 8, channels: 3, embedDim: 128, depth: 4, numHeads: 4,
  decoderEmbedDim: 96, decoderDepth: 2, decoderNumHeads: 4, maskRatio: 0.75, device: 'auto', seed: 0,
});
const steps = Number(arg('steps', '100')), out = arg('out', path.join('runs', 'folder'));
const trainer = new Trainer(model, folder, {
  batchSize: Number(arg('batch', '16')), steps, blr: 5e-3, warmupSteps: Math.ceil(steps / 10), outDir: out,
  overwrite: true,  // an example starts over each time; your own runs keep the default (refuse a non-empty folder)
  onStep: (s) => {
    if (s.step % 10 === 0 || s.step === steps)
      console.log(`step ${s.step}/${steps} loss ${s.loss.toFixed(4)} recon ${s.recon.toFixed(4)} consistency ${s.consistency.toFixed(4)} ${s.imagesPerSecond.toFixed(0)} img/s`);
  },
});
const { removed } = await trainer.prepareOutDir();
if (removed.length > 0) console.log(`starting over in ${out}: deleted ${removed.join(', ')}`);
await trainer.run();
console.log(`done on ${model.device}: log and checkpoints in ${out}`);
await model.dispose();

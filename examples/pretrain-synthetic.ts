// The main job on generated data: EMAE pretraining of a tiny ViT on random shapes with MAE's
// learning-rate recipe (lr = blr·batch/256, linear warm-up, half-cycle cosine to minLr), logging
// as it goes and writing the weights as safetensors.
//   node --import=tsx examples/pretrain-synthetic.ts [--steps 150] [--batch 32] [--blr 1e-2] [--out runs/synthetic]
// blr defaults to 1e-2 rather than MAE's 1.5e-4: a tiny model trained for a few hundred steps
// wants a far larger rate than a ViT-Base trained for 800 epochs.
// (In your project: import { EMAE, ParallelMasker } from 'emae'.)
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { EMAE, ParallelMasker } from '../lib/index.js';

function arg(name: string, fallback: number | string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : String(fallback);
}
const steps = Number(arg('steps', 150));
const batch = Number(arg('batch', 32));
const blr = Number(arg('blr', 1e-2));
const out = arg('out', path.join('runs', 'synthetic'));
const warmup = Math.max(1, Math.round(steps / 10)), minLr = 0;
if (!(steps > 0 && batch > 0 && blr > 0)) throw new RangeError('--steps, --batch and --blr must be positive');

const model = await EMAE.create({
  imageSize: 32, patchSize: 4, channels: 3, embedDim: 96, depth: 4, numHeads: 3,
  decoderEmbedDim: 64, decoderDepth: 2, decoderNumHeads: 4, maskRatio: 0.75, device: 'auto', seed: 0,
});
const { channels, imageSize } = model.config;
console.log(`EMAE on ${model.device}: ${steps} steps, batch ${batch}, K = ${model.config.parts}, blr ${blr}`);

// a generated dataset: filled discs and rectangles of random colours on a gradient background
let seed = 12345;
const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
function makeImage(dst: Float32Array, offset: number) {
  const bg = [rand(), rand(), rand()], fg = [rand(), rand(), rand()];
  const cx = rand() * imageSize, cy = rand() * imageSize, r = 4 + rand() * 8, disc = rand() < 0.5;
  for (let c = 0; c < channels; c++)
    for (let y = 0; y < imageSize; y++)
      for (let x = 0; x < imageSize; x++) {
        const inside = disc ? (x - cx) ** 2 + (y - cy) ** 2 < r * r : Math.abs(x - cx) < r && Math.abs(y - cy) < r / 2;
        const v = inside ? fg[c] : bg[c] * (0.5 + 0.5 * y / imageSize);
        dst[offset + (c * imageSize + y) * imageSize + x] = (v - 0.5) / 0.25;  // normalized
      }
}
const perImage = channels * imageSize * imageSize;
const datasetSize = 512;
const dataset = new Float32Array(datasetSize * perImage);
for (let i = 0; i < datasetSize; i++) makeImage(dataset, i * perImage);

const masker = ParallelMasker.fromConfig(model.config, 1);
const baseLr = (blr * batch) / 256;
const lrAt = (step: number) => step < warmup
  ? (baseLr * (step + 1)) / warmup
  : minLr + (baseLr - minLr) * 0.5 * (1 + Math.cos((Math.PI * (step - warmup)) / Math.max(1, steps - warmup)));

const images = new Float32Array(batch * perImage);
const started = performance.now();
let seen = 0;
for (let step = 0; step < steps; step++) {
  for (let b = 0; b < batch; b++) {
    const i = Math.floor(rand() * datasetSize);
    images.set(dataset.subarray(i * perImage, (i + 1) * perImage), b * perImage);
  }
  const lr = lrAt(step);
  const r = await model.trainStep({ images, permutation: masker.next(batch), batchSize: batch }, { lr, weightDecay: 0.05 });
  seen += batch;
  if (step % 10 === 0 || step === steps - 1) {
    const rate = seen / ((performance.now() - started) / 1000);
    console.log(`step ${String(step + 1).padStart(4)}/${steps}  loss ${r.loss.toFixed(4)}  recon ${r.recon.toFixed(4)}  ` +
      `consistency ${r.consistency.toFixed(4)}  lr ${lr.toExponential(2)}  ${rate.toFixed(0)} img/s`);
  }
}
mkdirSync(out, { recursive: true });
const file = path.join(out, 'emae-synthetic.safetensors');
await model.saveWeights(file);
console.log(`weights written to ${file}`);
await model.dispose();

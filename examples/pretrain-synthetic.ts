// The main job on generated data: EMAE pretraining of a tiny ViT on a generated dataset of simple
// shapes with MAE's learning-rate recipe (lr = blr·batch/256, linear warm-up, then half-cycle
// cosine to minLr, set every step), logging as it goes, and the final weights written as
// safetensors (MAE state-dict names; PyTorch's safetensors.torch.load_file reads them).
//   node --import=tsx examples/pretrain-synthetic.ts [--steps 150] [--batch 32] [--blr 1e-2]
//        [--warmup-steps 15] [--min-lr 0] [--log-every 10] [--out runs/synthetic]
// (`npm run example` runs it with the defaults: < 1 min on 2 CPU cores.)
// blr defaults to 1e-2 rather than MAE's 1.5e-4: a tiny model trained for a few hundred steps
// wants a far larger rate than a ViT-Base trained for 800 epochs.
// This file imports from '../lib/index.js' so that it runs from the source tree; in your project
// you write:  import { EMAE, ParallelMasker, lrAt, scaledLr } from 'emae';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { EMAE, ParallelMasker, lrAt, scaledLr } from '../lib/index.js';

const { values: argv } = parseArgs({
  options: {
    steps: { type: 'string', default: '150' },
    batch: { type: 'string', default: '32' },
    blr: { type: 'string', default: '1e-2' },
    'warmup-steps': { type: 'string' },             // default: 10% of the steps
    'min-lr': { type: 'string', default: '0' },
    'log-every': { type: 'string', default: '10' },
    out: { type: 'string', default: path.join('runs', 'synthetic') },
  },
});
function int(name: keyof typeof argv, min: number): number {
  const v = Number(argv[name]);
  if (!Number.isInteger(v) || v < min) throw new RangeError(`--${name} must be an integer >= ${min}, got ${argv[name]}`);
  return v;
}
function num(name: keyof typeof argv): number {
  const v = Number(argv[name]);
  if (!Number.isFinite(v) || v < 0) throw new RangeError(`--${name} must be a number >= 0, got ${argv[name]}`);
  return v;
}
const steps = int('steps', 1);
const batch = int('batch', 1);
const logEvery = int('log-every', 1);
const blr = num('blr');
const minLr = num('min-lr');
const warmup = argv['warmup-steps'] === undefined ? Math.max(1, Math.round(steps / 10)) : int('warmup-steps', 0);
const out = argv.out!;

const model = await EMAE.create({
  imageSize: 32, patchSize: 4, channels: 3, embedDim: 96, depth: 4, numHeads: 3,
  decoderEmbedDim: 64, decoderDepth: 2, decoderNumHeads: 4, maskRatio: 0.75, device: 'auto', seed: 0,
});
const { channels, imageSize, numPatches, parts } = model.config;
const baseLr = scaledLr(blr, batch);  // MAE: lr = blr · effective batch / 256
console.log(`EMAE on ${model.device}: ${steps} steps, batch ${batch}, N = ${numPatches} patches, K = ${parts} parts; ` +
  `lr = blr·batch/256 = ${blr}·${batch}/256 = ${baseLr.toExponential(2)}, ${warmup} warm-up steps, cosine to ${minLr}`);

// The generated dataset: a disc, a rectangle or a triangle of a random colour on a random
// vertical gradient, normalized to roughly zero mean and unit variance.
let seed = 12345;
const rand = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32;
const perImage = channels * imageSize * imageSize;
function makeImage(dst: Float32Array, offset: number): void {
  const top = [rand(), rand(), rand()], bottom = [rand(), rand(), rand()], fg = [rand(), rand(), rand()];
  const cx = rand() * imageSize, cy = rand() * imageSize, r = 4 + rand() * 8, shape = Math.floor(rand() * 3);
  const inside = (x: number, y: number): boolean =>
    shape === 0 ? (x - cx) ** 2 + (y - cy) ** 2 < r * r
      : shape === 1 ? Math.abs(x - cx) < r && Math.abs(y - cy) < r / 2
        : y > cy - r && y < cy + r && Math.abs(x - cx) < (y - (cy - r)) / 2;  // isosceles, apex up
  for (let c = 0; c < channels; c++)
    for (let y = 0; y < imageSize; y++)
      for (let x = 0; x < imageSize; x++) {
        const t = y / (imageSize - 1);
        const v = inside(x + 0.5, y + 0.5) ? fg[c] : top[c] * (1 - t) + bottom[c] * t;
        dst[offset + (c * imageSize + y) * imageSize + x] = (v - 0.5) / 0.25;
      }
}
const datasetSize = 512;
const dataset = new Float32Array(datasetSize * perImage);
for (let i = 0; i < datasetSize; i++) makeImage(dataset, i * perImage);
console.log(`dataset: ${datasetSize} generated ${imageSize}×${imageSize} images of discs, rectangles and triangles`);

// MAE's schedule (util/lr_sched.py), set every step: linear warm-up from 0, then half-cycle cosine
// to minLr. lrAt is the library's, the one the Trainer uses.
const schedule = { baseLr, warmupSteps: warmup, totalSteps: steps, minLr };

const masker = ParallelMasker.fromConfig(model.config, 1);
const images = new Float32Array(batch * perImage);
const window = { loss: 0, recon: 0, consistency: 0, steps: 0, started: performance.now() };
const started = performance.now();
for (let step = 0; step < steps; step++) {
  for (let b = 0; b < batch; b++) {  // a batch drawn with replacement
    const i = Math.floor(rand() * datasetSize);
    images.set(dataset.subarray(i * perImage, (i + 1) * perImage), b * perImage);
  }
  const lr = lrAt(step, schedule);
  const r = await model.trainStep({ images, permutation: masker.next(batch), batchSize: batch }, { lr, weightDecay: 0.05 });
  window.loss += r.loss; window.recon += r.recon; window.consistency += r.consistency; window.steps++;
  if ((step + 1) % logEvery === 0 || step === steps - 1) {
    const n = window.steps, seconds = (performance.now() - window.started) / 1000;
    console.log(`step ${String(step + 1).padStart(String(steps).length)}/${steps}  loss ${(window.loss / n).toFixed(4)}  ` +
      `recon ${(window.recon / n).toFixed(4)}  consistency ${(window.consistency / n).toFixed(4)}  ` +
      `lr ${lr.toExponential(2)}  ${((n * batch) / seconds).toFixed(0)} img/s`);
    Object.assign(window, { loss: 0, recon: 0, consistency: 0, steps: 0, started: performance.now() });
  }
}
const seconds = (performance.now() - started) / 1000;
console.log(`(losses are means over the steps since the previous line)  ${steps} steps in ${seconds.toFixed(1)} s, ` +
  `${((steps * batch) / seconds).toFixed(0)} img/s overall`);

mkdirSync(out, { recursive: true });
const file = path.join(out, 'emae-synthetic.safetensors');
await model.saveWeights(file);
console.log(`weights written to ${path.resolve(file)}`);
await model.dispose();

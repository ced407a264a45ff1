// Quickstart: create a small EMAE model, train it for 30 steps on a synthetic batch, save the
// weights as safetensors and load them into a fresh model.
//   node --import=tsx examples/quickstart.ts          (from the repository root; ~5 s on 2 cores)
// This file imports from '../lib/index.js' so that it runs from the source tree; in your project
// you write:  import { EMAE, ParallelMasker } from 'emae';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EMAE, ParallelMasker, type EMAEConfig } from '../lib/index.js';

// A small ViT: 32×32 RGB images in 4×4 patches (N = 64), mask ratio 0.75 → K = 4 parallel parts of
// V = 16 visible patches each, so every patch is seen once per step. (Or: { preset: 'cpu-tiny' }.)
const config: EMAEConfig = {
  imageSize: 32, patchSize: 4, channels: 3,
  embedDim: 64, depth: 4, numHeads: 4,                      // encoder
  decoderEmbedDim: 64, decoderDepth: 2, decoderNumHeads: 4, // decoder
  maskRatio: 0.75, device: 'cpu', seed: 0,     // device 'auto' picks a CUDA GPU when there is one
};
const model = await EMAE.create(config);
const { channels, imageSize, numPatches, parts, visiblePerPart } = model.config;
console.log(`model on ${model.device}: ${numPatches} patches, K = ${parts} parts of ${visiblePerPart} visible patches`);

// A synthetic batch with structure to learn: a gentle colour gradient plus three soft Gaussian blobs
// per image, so the masked patches can be predicted from the visible ones.
let seed = 7;
const rand = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32;
const B = 16;
const images = new Float32Array(B * channels * imageSize * imageSize);  // [B, C, H, W]
for (let b = 0; b < B; b++) {
  const [gx, gy] = [rand() - 0.5, rand() - 0.5];
  const blobs = Array.from({ length: 3 }, () => ({
    x: rand() * imageSize, y: rand() * imageSize, r: 3 + rand() * 6, colour: [0, 0, 0].map(() => rand() * 2 - 1),
  }));
  for (let c = 0; c < channels; c++)
    for (let y = 0; y < imageSize; y++)
      for (let x = 0; x < imageSize; x++) {
        let v = (gx * (x - imageSize / 2) + gy * (y - imageSize / 2)) / imageSize;
        for (const s of blobs) v += s.colour[c] * Math.exp(-((x - s.x) ** 2 + (y - s.y) ** 2) / (2 * s.r * s.r));
        images[((b * channels + c) * imageSize + y) * imageSize + x] = v;
      }
}

// Train: fresh seeded parallel masks every step (Int32Array [B, N] of permutations), fixed lr.
const masker = ParallelMasker.fromConfig(model.config, 1);
for (let step = 1; step <= 30; step++) {
  const r = await model.trainStep({ images, permutation: masker.next(B), batchSize: B }, { lr: 1e-3 });
  if (step === 1 || step % 5 === 0)
    console.log(`step ${String(step).padStart(2)}: loss ${r.loss.toFixed(4)}  recon ${r.recon.toFixed(4)}  ` +
      `consistency ${r.consistency.toFixed(4)}  grad norm ${r.gradNorm.toFixed(3)}`);
}

// Save (safetensors, MAE state-dict names, loadable by PyTorch) and load into a fresh model whose
// own initialization (another seed) differs, then check that every tensor came back bit for bit.
const dir = mkdtempSync(path.join(tmpdir(), 'emae-quickstart-'));
const file = path.join(dir, 'weights.safetensors');
await model.saveWeights(file);
console.log(`saved ${file} (${(statSync(file).size / 1024).toFixed(0)} KiB)`);
const copy = await EMAE.create({ ...config, seed: 123 });
await copy.loadWeights(file);
const [a, b] = [await model.stateDict(), await copy.stateDict()];
const names = Object.keys(a);
const differing = names.filter((k) => !(k in b) || a[k].length !== b[k].length || a[k].some((v, i) => v !== b[k][i]));
const same = differing.length === 0 && Object.keys(b).length === names.length;
console.log(`loaded into a fresh model: ${names.length} tensors, identical: ${same}` +
  (same ? '' : ` (differing: ${differing.slice(0, 5).join(', ')})`));
await Promise.all([model.dispose(), copy.dispose()]);
rmSync(dir, { recursive: true, force: true });
if (!same) process.exit(1);

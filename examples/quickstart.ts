// Quickstart: create a small EMAE model, train a few steps on synthetic images, save the weights
// and load them into a fresh model.  Run: node --import=tsx examples/quickstart.ts
// (In your project: import { EMAE, ParallelMasker } from 'emae'.)
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { EMAE, ParallelMasker } from '../lib/index.js';

const config = {
  imageSize: 32, patchSize: 4, channels: 3, embedDim: 64, depth: 4, numHeads: 4,
  decoderEmbedDim: 64, decoderDepth: 2, decoderNumHeads: 4, maskRatio: 0.75, seed: 0,
} as const;
const model = await EMAE.create({ ...config, device: 'auto' });
console.log(`model on ${model.device}: ${model.config.numPatches} patches, K = ${model.config.parts} parts of ${model.config.visiblePerPart}`);

// smooth colour gradients and stripes: structure to reconstruct from the visible patches
const B = 16, { channels, imageSize } = model.config;
const images = new Float32Array(B * channels * imageSize * imageSize);
for (let b = 0; b < B; b++)
  for (let c = 0; c < channels; c++)
    for (let y = 0; y < imageSize; y++)
      for (let x = 0; x < imageSize; x++)
        images[((b * channels + c) * imageSize + y) * imageSize + x] =
          Math.sin((x * (1 + (b % 4)) + y * (1 + c)) / 6 + b) * (0.5 + 0.1 * c);

const masker = ParallelMasker.fromConfig(model.config, 1);  // seeded parallel masks
for (let step = 1; step <= 30; step++) {
  const r = await model.trainStep({ images, permutation: masker.next(B), batchSize: B }, { lr: 2e-3 });
  if (step % 5 === 0)
    console.log(`step ${step}: loss ${r.loss.toFixed(4)}  recon ${r.recon.toFixed(4)}  consistency ${r.consistency.toFixed(4)}`);
}

const file = path.join(mkdtempSync(path.join(tmpdir(), 'emae-')), 'quickstart.safetensors');
await model.saveWeights(file);
const copy = await EMAE.create({ ...config, device: 'cpu', seed: 123 });
await copy.loadWeights(file);
const [a, b] = [await model.stateDict(), await copy.stateDict()];
const same = Object.keys(a).every((k) => a[k].every((v, i) => v === b[k][i]));
console.log(`saved ${file}; reloaded weights identical: ${same}`);
await model.dispose();
await copy.dispose();
if (!same) process.exit(1);

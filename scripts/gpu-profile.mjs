// Two EMAE training steps of a preset on CUDA, for a kernel-time breakdown under ncu:
//   ncu --metrics gpu__time_duration.sum --print-summary per-kernel node scripts/gpu-profile.mjs vit-base 32
import { EMAE, ParallelMasker } from '../dist/index.js';

const [preset = 'vit-base', batch = '32', steps = '2'] = process.argv.slice(2);
const B = Number(batch);
const model = await EMAE.create({ preset, parts: 4, device: 'cuda', seed: 0 });
const c = model.config;
const masker = ParallelMasker.fromConfig(c, 1);
const images = Float32Array.from({ length: B * c.channels * c.imageSize * c.imageSize }, () => Math.random() - 0.5);
for (let s = 0; s < Number(steps); s++) {
  const t0 = performance.now();
  const r = await model.trainStep({ images, permutation: masker.next(B), batchSize: B }, { lr: 1e-4 });
  console.log(`step ${r.step}: loss ${r.loss.toFixed(4)} in ${(performance.now() - t0).toFixed(1)} ms`);
}
await model.dispose();

// A small CUDA training step for compute-sanitizer (memcheck, racecheck): every kernel of the
// step runs once or twice on tiny shapes. Usage: node scripts/gpu-smoke.mjs [steps]
import { EMAE, ParallelMasker } from '../dist/index.js';

const steps = Number(process.argv[2] ?? 2);
const model = await EMAE.create({
  imageSize: 16, patchSize: 4, channels: 3, embedDim: 32, depth: 1, numHeads: 2, decoderEmbedDim: 32,
  decoderDepth: 1, decoderNumHeads: 2, maskRatio: 0.75, device: 'cuda', seed: 1,
});
const masker = ParallelMasker.fromConfig(model.config, 2);
const B = 2;
const images = Float32Array.from({ length: B * 3 * 16 * 16 }, (_, i) => Math.sin(i * 0.37));
for (let s = 0; s < steps; s++) {
  const r = await model.trainStep({ images, permutation: masker.next(B), batchSize: B }, { lr: 1e-3, clipGrad: 1 });
  console.log(`step ${r.step}: loss ${r.loss.toFixed(6)} recon ${r.recon.toFixed(6)} consistency ${r.consistency.toFixed(6)} gradNorm ${r.gradNorm.toFixed(4)}`);
}
const g = await model.lossAndGrads({ images, permutation: masker.next(B), batchSize: B });
console.log(`lossAndGrads: loss ${g.loss.toFixed(6)}, ${Object.keys(g.grads).length} gradients`);
await model.dispose();

// A small CUDA training step for compute-sanitizer (memcheck, racecheck): every kernel of the
// step runs once or twice on tiny shapes; then encode and reconstruct (the forward-only paths,
// encode with its encoder-only arena) against a CPU model with the same weights.
// Usage: node scripts/gpu-smoke.mjs [steps]. Exits 1 if the CUDA and CPU outputs disagree.
import { EMAE, ParallelMasker } from '../dist/index.js';

const steps = Number(process.argv[2] ?? 2);
const config = {
  imageSize: 16, patchSize: 4, channels: 3, embedDim: 32, depth: 1, numHeads: 2, decoderEmbedDim: 32,
  decoderDepth: 1, decoderNumHeads: 2, maskRatio: 0.75, seed: 1,
};
const model = await EMAE.create({ ...config, device: process.env.SMOKE_DEVICE ?? 'cuda' });  // (cpu: to check the script)
const masker = ParallelMasker.fromConfig(model.config, 2);
const B = 2;
const images = Float32Array.from({ length: B * 3 * 16 * 16 }, (_, i) => Math.sin(i * 0.37));
for (let s = 0; s < steps; s++) {
  const r = await model.trainStep({ images, permutation: masker.next(B), batchSize: B }, { lr: 1e-3, clipGrad: 1 });
  console.log(`step ${r.step}: loss ${r.loss.toFixed(6)} recon ${r.recon.toFixed(6)} consistency ${r.consistency.toFixed(6)} gradNorm ${r.gradNorm.toFixed(4)}`);
}
const g = await model.lossAndGrads({ images, permutation: masker.next(B), batchSize: B });
console.log(`lossAndGrads: loss ${g.loss.toFixed(6)}, ${Object.keys(g.grads).length} gradients`);
const cpu = await EMAE.create({ ...config, device: 'cpu', threads: 2 });
await cpu.loadStateDict(await model.stateDict());
const relL2 = (a, b) => {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) { num += (a[i] - b[i]) ** 2; den += b[i] ** 2; }
  return Math.sqrt(num / Math.max(den, 1e-30));
};
let bad = 0;
const report = (what, e, tol) => {
  console.log(`${what}: cuda vs cpu relative error ${e.toExponential(2)} (tolerance ${tol})`);
  if (!(e <= tol)) bad++;
};
for (const pool of ['cls', 'mean']) report(`encode ${pool}`, relL2(await model.encode(images, { pool }), await cpu.encode(images, { pool })), 3e-2);
const permutation = masker.next(B);
const rg = await model.reconstruct(images, { permutation }), rc = await cpu.reconstruct(images, { permutation });
report('reconstruct parts', relL2(rg.parts, rc.parts), 3e-2);
report('reconstruct assembled', relL2(rg.assembled, rc.assembled), 3e-2);
report('reconstruct loss', Math.abs(rg.loss - rc.loss) / Math.abs(rc.loss), 3e-2);
await cpu.dispose();
await model.dispose();
if (bad) {
  console.error(`${bad} CUDA/CPU comparisons out of tolerance`);
  process.exit(1);
}

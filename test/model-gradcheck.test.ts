// Finite-difference check of the whole EMAE loss through the native model (fp32), on tiny
// configs covering K = 1, 2, 4, mse and l1, normPixLoss on and off, 1 and 3 channels.
//
// The consistency term pulls only the first member of each ordered pair (stop-gradient), and S
// holds both (i, j) and (j, i): so the gradient the model returns for L_rec + λ·L_con is exactly
// the true derivative of L_rec + (λ/2)·L_con. We check that identity along random directions:
//   Σ grad·u  ≈  [F(θ + hu) − F(θ − hu)] / 2h,   F = recon + (λ/2)·consistency.
// (Without the stop-gradient the factor would be λ, and the check fails.) The loss is computed
// in fp32, so directions are normalized and h is large enough that round-off (~1e-7·F/h) stays
// far below the 1e-2 tolerance (measured: 3e-5 to 2e-3; dropping the stop-gradient factor gives
// 3e-2 to 1.4e-1).
import test from 'ava';
import { EMAE, ParallelMasker, type EMAEConfig } from '../lib/index.js';
import { seededUniform, gratings } from './helpers/synthetic.js';

interface Case {
  name: string;
  config: EMAEConfig;
  lambda: number;
  h: number;
}

const base = {
  imageSize: 8, patchSize: 2, embedDim: 16, depth: 2, numHeads: 2, decoderEmbedDim: 12, decoderDepth: 1,
  decoderNumHeads: 2, mlpRatio: 2, device: 'cpu' as const, threads: 1, seed: 7,
};

const cases: Case[] = [
  { name: 'K=4 of 4, mse, normPix, 3 channels', config: { ...base, channels: 3, maskRatio: 0.75, parts: 4, normPixLoss: true, consistencyDistance: 'mse' }, lambda: 1, h: 1e-2 },
  { name: 'K=2 of 4, l1, raw pixels, 1 channel', config: { ...base, channels: 1, maskRatio: 0.75, parts: 2, normPixLoss: false, consistencyDistance: 'l1' }, lambda: 0.8, h: 1e-3 },
  { name: 'K=1 (plain MAE), normPix, 3 channels', config: { ...base, channels: 3, maskRatio: 0.75, parts: 1, normPixLoss: true }, lambda: 1, h: 1e-2 },
  { name: 'K=2 of 2, mse, normPix, 1 channel', config: { ...base, channels: 1, maskRatio: 0.5, parts: 2, normPixLoss: true, consistencyDistance: 'mse' }, lambda: 1, h: 1e-2 },
  { name: 'K=4 of 4, l1, raw pixels, 3 channels, λ=2', config: { ...base, channels: 3, maskRatio: 0.75, parts: 4, normPixLoss: false, consistencyDistance: 'l1' }, lambda: 2, h: 1e-3 },
];

for (const c of cases) {
  test(`gradient of the whole loss matches finite differences: ${c.name}`, async (t) => {
    const model = await EMAE.create(c.config);
    try {
      const cfg = model.config;
      const B = 2;
      const images = gratings(B, cfg.channels, cfg.imageSize, 11);
      const permutation = new ParallelMasker({ numPatches: cfg.numPatches, partsTotal: cfg.partsTotal, parts: cfg.parts, seed: 5 }).next(B);
      const batch = { images, permutation, batchSize: B };
      const { grads, consistency } = await model.lossAndGrads(batch, { consistencyWeight: c.lambda });
      // a patch masked in two parts exists iff K ≥ 3, or K = 2 with patches visible in no part
      const hasPairs = cfg.parts >= 3 || (cfg.parts === 2 && cfg.parts < cfg.partsTotal);
      if (hasPairs) t.true(consistency > 0, 'the consistency term is exercised');
      else t.is(consistency, 0, 'no patch is masked in two parts, so S is empty and L_con = 0');

      const theta = await model.stateDict();
      const rand = seededUniform(3);
      const objective = async (sign: number, u: Record<string, Float32Array>, h: number) => {
        const shifted: Record<string, Float32Array> = {};
        for (const [name, p] of Object.entries(theta)) {
          const d = u[name];
          shifted[name] = d ? p.map((v, i) => v + sign * h * d[i]) : p;
        }
        await model.loadStateDict(shifted);
        const r = await model.lossAndGrads(batch, { consistencyWeight: c.lambda });
        return r.recon + (c.lambda / 2) * r.consistency;
      };

      for (let trial = 0; trial < 3; trial++) {
        // random unit direction over the trainable parameters
        const u: Record<string, Float32Array> = {};
        let norm = 0;
        for (const name of Object.keys(grads)) {
          u[name] = Float32Array.from(grads[name], () => rand() * 2 - 1);
          for (const v of u[name]) norm += v * v;
        }
        let analytic = 0;
        for (const name of Object.keys(grads)) {
          const d = u[name];
          for (let i = 0; i < d.length; i++) {
            d[i] /= Math.sqrt(norm);
            analytic += grads[name][i] * d[i];
          }
        }
        const numeric = ((await objective(+1, u, c.h)) - (await objective(-1, u, c.h))) / (2 * c.h);
        const rel = Math.abs(analytic - numeric) / Math.max(Math.abs(numeric), 1e-3);
        t.true(rel < 1e-2, `trial ${trial}: analytic ${analytic.toExponential(5)} vs numeric ${numeric.toExponential(5)} (rel ${rel.toExponential(2)})`);
      }
    } finally {
      await model.dispose();
    }
  });
}

// Child process of bf16.test.ts: under whatever EMAE_BF16_KERNEL the parent set, prints one JSON
// line { available, kernel, reason, worst, cases, createError } — the worst relative L2 of gemm()
// in every layout against float64 on bf16-rounded operands, and what EMAE.create with
// cpuMatmul 'bf16' threw (if anything).
import { EMAE } from '../../lib/index.js';
import { native } from '../../lib/native.js';
import { checkGemm, layouts } from './bf16-gemm.js';
import { randn as randnFrom, seededRng } from './numeric.js';

const rng = seededRng(13);
const randn = (n: number, scale = 1) => randnFrom(n, rng, scale);
const { available, kernel, reason } = native().cpuBf16Available();
let worst = 0, cases = 0, padKept = true;
if (available)
  for (const [M, N, K] of [[1, 1, 1], [13, 33, 3], [37, 100, 257], [300, 97, 513], [40, 800, 64]])
    for (const [transA, transB] of layouts) {
      const r = checkGemm({ M, N, K, transA, transB, pad: 3, epilogue: true }, randn);
      worst = Math.max(worst, r.error);
      padKept &&= r.padKept;
      cases++;
    }
let createError = '';
try {
  const m = await EMAE.create({
    imageSize: 16, patchSize: 4, channels: 3, embedDim: 32, depth: 1, numHeads: 2, decoderEmbedDim: 32,
    decoderDepth: 1, decoderNumHeads: 2, device: 'cpu', threads: 2, cpuMatmul: 'bf16',
  });
  await m.dispose();
} catch (e) {
  createError = (e as Error).message;
}
console.log(JSON.stringify({ available, kernel, reason, worst, cases, padKept, createError }));

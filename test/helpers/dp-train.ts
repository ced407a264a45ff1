// One rank of a data-parallel test run (test/distributed.test.ts), or the one-process reference
// when no launcher started it: trains a tiny model with the Trainer and writes
// <out>/rank-<r>.json with every step's loss and a SHA-256 of the parameters after every step
// (so the test can check that ranks stay bitwise identical), and the final parameters and AdamW
// moments (rank 0's checkpoint holds them too).
//   node --import=tsx test/helpers/dp-train.ts '<json options>'
// Options: batch, steps, accumulate, parts, out, resume, stopAt+stopRank (rank `stopRank` calls
// trainer.stop() after step `stopAt`, as a signal would), failAt+failRank (that rank's data
// source throws on its `failAt`-th load: with accumulate a, load k is micro-batch (k−1) % a + 1 of
// step ⌈k / a⌉), nanRank (that rank's images are NaN from step 3), blockCheckpointAt (rank 0 puts
// a non-empty folder where that step's checkpoint goes, after step 1: its write fails as on a full
// disk), noAbort (an error is only recorded, as by a Trainer user who never calls dist.abort),
// device ('cpu', the default, with 1 thread; 'cuda': every rank on the GPU its local rank picks,
// gradients all-reduced through the host over MPI).
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { EMAE, Trainer, initDistributed, isCollectiveError, type BatchSource } from '../../lib/index.js';
import { gratings } from './synthetic.js';

const o = JSON.parse(process.argv[2] ?? '{}');
const dist = await initDistributed({ collectives: 'mpi' });
const config = {
  imageSize: 16, patchSize: 4, channels: 3, embedDim: 32, depth: 1, numHeads: 2, decoderEmbedDim: 32, decoderDepth: 1,
  decoderNumHeads: 2, mlpRatio: 2, maskRatio: 0.75, parts: o.parts ?? 4, seed: 1,
  ...(o.device === 'cuda' ? { device: 'cuda' as const } : { device: 'cpu' as const, threads: 1 }),
};
const model = await EMAE.create(config);
const count = 64, per = 3 * 16 * 16, images = gratings(count, 3, 16, 3);
let loads = 0;
const source: BatchSource = {
  count,
  async load(indices) {
    loads += 1;
    if (o.failRank === dist.rank && loads === o.failAt) throw new Error(`shard-${dist.rank}.bin: record ${indices[0]} is corrupted (bad checksum)`);
    const out = new Float32Array(indices.length * per);
    indices.forEach((i, b) => out.set(images.subarray(i * per, (i + 1) * per), b * per));
    if (o.nanRank === dist.rank && loads >= 3) out.fill(Number.NaN);
    return out;
  },
};
const hash = (tensors: Record<string, Float32Array>) => {
  const h = createHash('sha256');
  for (const name of Object.keys(tensors).sort()) h.update(name).update(new Uint8Array(tensors[name].buffer, tensors[name].byteOffset, tensors[name].byteLength));
  return h.digest('hex');
};
const losses: number[] = [], hashes: string[] = [];
const trainer = new Trainer(model, o.failRank !== undefined || o.nanRank !== undefined ? source : { images, count }, {
  batchSize: o.batch, steps: o.steps, accumulate: o.accumulate ?? 1, blr: 5e-2, warmupSteps: 2, clipGrad: 1, seed: 7,
  consistencyStart: 1, outDir: o.out, checkpointEvery: o.checkpointEvery ?? 0,
  ...(dist.worldSize > 1 ? { distributed: dist } : {}),
  onStep: async (s) => {
    losses.push(s.loss);
    hashes.push(hash(await model.stateDict()));
    if (o.stopAt === s.step && o.stopRank === dist.rank) trainer.stop();
    if (o.blockCheckpointAt !== undefined && s.step === 1 && dist.rank === 0) {
      const blocker = path.join(o.out, `ckpt-${o.blockCheckpointAt}.safetensors`);
      mkdirSync(blocker);
      writeFileSync(path.join(blocker, 'x'), 'x');
    }
  },
});
if (o.resume) await trainer.resume();
let error: string | undefined, code: string | undefined;
try {
  await trainer.run();
} catch (err) {
  if (!isCollectiveError(err) && !o.noAbort) dist.abort((err as Error).message);  // names the rank, ends the job
  error = (err as Error).message;
  code = (err as { code?: string }).code;
}
const opt = await model.getOptimizerState();
writeFileSync(path.join(o.out, `rank-${dist.rank}.json`), JSON.stringify({
  rank: dist.rank, worldSize: dist.worldSize, step: trainer.step, losses, hashes, error, code,
  final: hash({ ...(await model.stateDict()), ...Object.fromEntries(Object.entries(opt.expAvg).map(([k, v]) => [`m.${k}`, v])),
    ...Object.fromEntries(Object.entries(opt.expAvgSq).map(([k, v]) => [`v.${k}`, v])) }),
}));
await model.dispose();
await dist.finalize();
process.exitCode = error ? 3 : 0;

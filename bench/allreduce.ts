// All-reduce of a whole model's gradient buffer (the per-step cost data parallelism adds):
//   mpirun -np 2 node --import=tsx bench/allreduce.ts [--preset vit-base] [--device cpu|cuda]
//     [--collectives auto|mpi|nccl] [--iters 10]
// Rank 0 prints the median time and the bandwidths as nccl-tests defines them: algorithm
// bandwidth = gradient bytes / time, bus bandwidth = algbw · 2(n−1)/n.
import { EMAE, initDistributed, type Collectives } from '../lib/index.js';

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const dist = await initDistributed({ collectives: arg('collectives', 'auto') as Collectives });
const model = await EMAE.create({ preset: arg('preset', 'vit-base') as 'vit-base', device: arg('device', 'cpu') as 'cpu', threads: 1 });
const floats = model.paramInfo().reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
const iters = Number(arg('iters', '10'));
await dist.allReduceGradients(model, { average: false });  // warm-up (and NCCL communicator set-up)
const times: number[] = [];
for (let i = 0; i < iters; i++) {
  await dist.barrier();
  const t0 = performance.now();
  await dist.allReduceGradients(model, { average: false });
  times.push((performance.now() - t0) / 1000);
}
times.sort((a, b) => a - b);
const t = times[times.length >> 1], bytes = floats * 4, n = dist.worldSize;
if (dist.isMain) {
  console.log(JSON.stringify({
    preset: arg('preset', 'vit-base'), device: model.device, worldSize: n, collectives: dist.collectives, gradientMB: +(bytes / 1e6).toFixed(1),
    medianMs: +(t * 1000).toFixed(2), minMs: +(times[0] * 1000).toFixed(2), algGBs: +(bytes / t / 1e9).toFixed(2),
    busGBs: +((bytes / t / 1e9) * (2 * (n - 1)) / n).toFixed(2),
  }));
}
await model.dispose();
await dist.finalize();

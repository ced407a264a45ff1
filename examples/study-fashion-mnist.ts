// The paper's claim at small scale, on Fashion-MNIST: MAE (K = 1) and EMAE (K = 4) pretrained
// from the same seed for the same epochs, and MAE for 4× the epochs (the same encoder compute as
// EMAE, whose 4 parts see every patch each iteration); then a linear probe and kNN on the frozen
// encoder's cls features. Writes a markdown table, the loss curves and the results as pictures.
//   node --import=tsx examples/study-fashion-mnist.ts [--epochs 1] [--train-count 60000]
//        [--test-count 10000] [--batch 64] [--out runs/study] [--dir /usr/share/datasets/fashion-mnist]
// (In your project: import { … } from 'emae'.)
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  EMAE, Trainer, knnAccuracy, linearProbe, loadIdx, lossCurvesSvg, readStepLog, resultsSvg, writeChart,
  type LabelledImageSet,
} from '../lib/index.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}
const dir = arg('dir', '/usr/share/datasets/fashion-mnist');
const epochs = Number(arg('epochs', '1')), batch = Number(arg('batch', '64'));
const trainCount = Number(arg('train-count', '60000')), testCount = Number(arg('test-count', '10000'));
const out = arg('out', path.join('runs', 'study'));
if (!existsSync(path.join(dir, 'train-images-idx3-ubyte.gz'))) {
  console.error(`Fashion-MNIST not found at ${dir}: sudo apt-get install dataset-fashion-mnist, or pass --dir`);
  process.exit(2);
}
const norm = { mean: [0.286], std: [0.353] };
const subset = (d: LabelledImageSet, n: number): LabelledImageSet => {
  const per = d.channels * d.size * d.size, count = Math.min(n, d.count);
  return { ...d, count, images: d.images.slice(0, count * per), labels: d.labels?.slice(0, count) };
};
const train = subset(await loadIdx(path.join(dir, 'train-images-idx3-ubyte.gz'), { labelsFile: path.join(dir, 'train-labels-idx1-ubyte.gz'), padTo: 32, normalization: norm }), trainCount);
const test = subset(await loadIdx(path.join(dir, 't10k-images-idx3-ubyte.gz'), { labelsFile: path.join(dir, 't10k-labels-idx1-ubyte.gz'), padTo: 32, normalization: norm }), testCount);
console.log(`Fashion-MNIST: ${train.count} train / ${test.count} test images, 32×32; ${epochs} epoch(s), batch ${batch}`);

const model = { imageSize: 32, patchSize: 4, channels: 1, embedDim: 96, depth: 4, numHeads: 3,
  decoderEmbedDim: 64, decoderDepth: 2, decoderNumHeads: 4, maskRatio: 0.75, seed: 0, device: 'auto' as const };
const runs = [
  { name: 'MAE (K=1)', parts: 1, epochs },
  { name: 'EMAE (K=4)', parts: 4, epochs },
  { name: `MAE (K=1), ${4 * epochs} epochs`, parts: 1, epochs: 4 * epochs },
];
const rows: { run: string; epochs: number; steps: number; seconds: number; probe: number; knn: number; recon: number }[] = [];
const curves: Record<string, Awaited<ReturnType<typeof readStepLog>>> = {};
mkdirSync(out, { recursive: true });
for (const run of runs) {
  const runDir = path.join(out, run.name.replace(/[^A-Za-z0-9]+/g, '-').replace(/-$/, ''));
  const m = await EMAE.create({ ...model, parts: run.parts });
  const started = performance.now();
  let lastRecon = NaN;
  const trainer = new Trainer(m, train, {
    batchSize: batch, epochs: run.epochs, blr: 1.5e-3, warmupSteps: 20, seed: 0, outDir: runDir,
    overwrite: true,  // a rerun of the study replaces its runs
    onStep: (s) => {
      lastRecon = s.recon;
      if (s.step % 50 === 0) console.log(`  ${run.name}: step ${s.step} loss ${s.loss.toFixed(4)} recon ${s.recon.toFixed(4)} ${s.imagesPerSecond.toFixed(0)} img/s`);
    },
  });
  await trainer.run();
  const seconds = (performance.now() - started) / 1000;
  const features = async (d: LabelledImageSet) => {
    const per = d.channels * d.size * d.size, parts: Float32Array[] = [];
    for (let s = 0; s < d.count; s += 500) parts.push(await m.encode(d.images.subarray(s * per, Math.min(d.count, s + 500) * per)));
    const x = new Float32Array(d.count * m.config.embedDim);
    parts.forEach((f, i) => x.set(f, i * 500 * m.config.embedDim));
    return { x, labels: d.labels!, dim: m.config.embedDim };
  };
  const [ftrain, ftest] = [await features(train), await features(test)];
  const probe = linearProbe(ftrain, ftest, { epochs: 30 }), knn = knnAccuracy(ftrain, ftest);
  rows.push({ run: run.name, epochs: run.epochs, steps: trainer.step, seconds, probe, knn, recon: lastRecon });
  curves[run.name] = await readStepLog(path.join(runDir, 'log.jsonl'));
  console.log(`${run.name}: ${trainer.step} steps in ${seconds.toFixed(0)} s on ${m.device}; linear probe ${(100 * probe).toFixed(1)}%, kNN ${(100 * knn).toFixed(1)}%`);
  await m.dispose();
}
const table = ['| run | epochs | steps | pretraining s | final recon | linear probe top-1 | kNN top-1 |', '|---|---|---|---|---|---|---|',
  ...rows.map((r) => `| ${r.run} | ${r.epochs} | ${r.steps} | ${r.seconds.toFixed(0)} | ${r.recon.toFixed(4)} | ${(100 * r.probe).toFixed(1)}% | ${(100 * r.knn).toFixed(1)}% |`)].join('\n');
writeFileSync(path.join(out, 'results.md'), table + '\n');
await writeChart(await lossCurvesSvg(curves), path.join(out, 'curves'));
await writeChart(await resultsSvg(rows.flatMap((r) => [{ run: r.run, metric: 'linear probe', value: r.probe }, { run: r.run, metric: 'kNN', value: r.knn }])), path.join(out, 'results'));
console.log(`\n${table}\n\nwritten: ${out}/results.md, curves.svg/png, results.svg/png`);

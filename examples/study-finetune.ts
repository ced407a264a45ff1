// The fine-tuning half of the study (examples/README.md, "Fine-tuning: MAE vs EMAE at equal
// pretraining time"): every checkpoint examples/study-pretrain-budgets.ts wrote, and a
// no-pretraining baseline, fine-tuned with one fixed recipe, linear-probed and kNN-scored, with
// the paper's consistency measure of each pretrained model; then a table and a plot.
//   node --import=tsx examples/study-finetune.ts [--out runs/ft-study] [--only name,name] [--report]
//        [--train-count 20000] [--test-count 10000] [--epochs 5] [--dir /usr/share/datasets/fashion-mnist]
// Each run's results go to <out>/ft-<name>.json, so two processes can share the list (--only);
// --report (or a run that finds every result there) writes results.md and accuracy.svg/png.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  Classifier, EMAE, FineTuner, accuracyVsTimeSvg, consistencyMeasure, knnAccuracy, linearProbe, loadIdx, top1Accuracy,
  writeChart, type LabelledImageSet,
} from '../lib/index.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}
const dir = arg('dir', '/usr/share/datasets/fashion-mnist');
const out = arg('out', path.join('runs', 'ft-study'));
const trainCount = Number(arg('train-count', '20000')), testCount = Number(arg('test-count', '10000')), epochs = Number(arg('epochs', '5'));
const only = process.argv.includes('--only') ? arg('only', '').split(',') : undefined;
const manifestFile = path.join(out, 'pretrain.json');
if (!existsSync(manifestFile)) {
  console.error(`${manifestFile} not found: run examples/study-pretrain-budgets.ts first`);
  process.exit(2);
}
interface RunRecord {
  name: string; method: 'MAE' | 'EMAE'; parts: number; budgetMinutes: number | null; steps: number; epochs: number;
  wallSeconds: number; cpuSeconds: number; finalRecon: number; weights: string;
}
const manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as { model: Record<string, unknown>; runs: RunRecord[]; cpu: string };
const { parts: _p, maskRatio: _m, decoderEmbedDim: _d, decoderDepth: _dd, decoderNumHeads: _dh, ...encoder } = manifest.model;

// The fixed recipe, the same for every checkpoint and for the baseline: MAE's fine-tuning recipe
// (blr 1e-3, layer decay 0.75, weight decay 0.05, drop path 0.1, label smoothing 0.1, mixup 0.8 /
// cutmix 1.0, cosine to 1e-6 after a warm-up of half an epoch) for `epochs` epochs on the first
// `trainCount` training images; the random resized crop keeps 35–100% of the area (MAE's 8% of a
// 32-px image is a 9-px crop, which loses the garment).
const recipe = {
  batchSize: 64, epochs, blr: 1e-3, layerDecay: 0.75, weightDecay: 0.05, warmupEpochs: 0.5, minLr: 1e-6,
  mixup: 0.8, cutmix: 1.0, cropScale: [0.35, 1] as [number, number], seed: 0,
};
const head = { numClasses: 10, globalPool: true, dropPath: 0.1, labelSmoothing: 0.1 };

const norm = { mean: [0.286], std: [0.353] };
const subset = (d: LabelledImageSet, n: number): LabelledImageSet => {
  const per = d.channels * d.size * d.size, count = Math.min(n, d.count);
  return { ...d, count, images: d.images.slice(0, count * per), labels: d.labels?.slice(0, count) };
};
const train = subset(await loadIdx(path.join(dir, 'train-images-idx3-ubyte.gz'), { labelsFile: path.join(dir, 'train-labels-idx1-ubyte.gz'), padTo: 32, normalization: norm }), trainCount);
const test = subset(await loadIdx(path.join(dir, 't10k-images-idx3-ubyte.gz'), { labelsFile: path.join(dir, 't10k-labels-idx1-ubyte.gz'), padTo: 32, normalization: norm }), testCount);

interface Result {
  name: string; method: string; budgetMinutes: number | null; pretrainSteps: number; pretrainEpochs: number;
  pretrainWallSeconds: number; pretrainCpuSeconds: number; finalRecon: number | null; consistency: number | null;
  finetuneTop1: number; finetuneTop1PerEpoch: number[]; finetuneSeconds: number; linearProbe: number | null; knn: number | null;
}

async function evaluate(run: RunRecord | undefined): Promise<Result> {
  const name = run?.name ?? 'scratch';
  console.log(`== ${name}`);
  let probe: number | null = null, knn: number | null = null, consistency: number | null = null;
  if (run) {
    // frozen features and the consistency measure, on the pretrained model itself
    const m = await EMAE.create({ ...manifest.model, parts: run.parts, device: 'cpu', threads: 1 } as never);
    await m.loadWeights(run.weights);
    const features = async (d: LabelledImageSet) => {
      const per = d.channels * d.size * d.size, x = new Float32Array(d.count * m.config.embedDim);
      for (let s = 0; s < d.count; s += 500) x.set(await m.encode(d.images.subarray(s * per, Math.min(d.count, s + 500) * per)), s * m.config.embedDim);
      return { x, labels: d.labels!, dim: m.config.embedDim };
    };
    const [ftrain, ftest] = [await features(train), await features(test)];
    probe = linearProbe(ftrain, ftest, { epochs: 30 });
    knn = knnAccuracy(ftrain, ftest);
    consistency = await consistencyMeasure(m, test.images.subarray(0, Math.min(256, test.count) * 32 * 32), { draws: 4, seed: 1 });
    await m.dispose();
    console.log(`  linear probe ${(100 * probe).toFixed(2)}%, kNN ${(100 * knn).toFixed(2)}%, consistency ${consistency.toPrecision(3)}`);
  }
  const clf = await Classifier.create({ ...(encoder as object), ...head, device: 'cpu', threads: 1, seed: 0 } as never);
  if (run) await clf.loadPretrained(run.weights);
  const perEpoch: number[] = [];
  const t0 = performance.now();
  const tuner = new FineTuner(clf, train, {
    ...recipe, testData: test, outDir: path.join(out, `ft-${name}`), overwrite: true,
    onEpoch: (e) => { perEpoch.push(e.testTop1!); console.log(`  fine-tune epoch ${e.epoch + 1}/${epochs}: loss ${e.trainLoss.toFixed(4)}, test top-1 ${(100 * e.testTop1!).toFixed(2)}% (${e.seconds.toFixed(0)} s)`); },
  });
  await tuner.run();
  const finetuneSeconds = (performance.now() - t0) / 1000;
  const top1 = await top1Accuracy(clf, test);
  await clf.dispose();
  return {
    name, method: run?.method ?? 'scratch', budgetMinutes: run?.budgetMinutes ?? null, pretrainSteps: run?.steps ?? 0,
    pretrainEpochs: run?.epochs ?? 0, pretrainWallSeconds: run?.wallSeconds ?? 0, pretrainCpuSeconds: run?.cpuSeconds ?? 0,
    finalRecon: run?.finalRecon ?? null, consistency, finetuneTop1: top1, finetuneTop1PerEpoch: perEpoch, finetuneSeconds,
    linearProbe: probe, knn,
  };
}

const runs: (RunRecord | undefined)[] = [undefined, ...manifest.runs];
const resultFile = (name: string) => path.join(out, `ft-${name}.json`);
if (!process.argv.includes('--report')) {
  for (const run of runs) {
    const name = run?.name ?? 'scratch';
    if (only && !only.includes(name)) continue;
    if (existsSync(resultFile(name))) { console.log(`${name}: done before`); continue; }
    const r = await evaluate(run);
    writeFileSync(resultFile(name), JSON.stringify({ ...r, recipe, head, trainCount, testCount: test.count }, null, 2));
  }
}

// the report, once every result is there
const results = runs.map((r) => resultFile(r?.name ?? 'scratch')).filter(existsSync).map((f) => JSON.parse(readFileSync(f, 'utf8')) as Result);
if (results.length < runs.length) {
  console.log(`${results.length}/${runs.length} results in ${out}; the report waits for the rest`);
  process.exit(0);
}
const pct = (v: number | null) => (v === null ? '—' : `${(100 * v).toFixed(2)}%`);
const table = [
  '| run | pretraining | steps (epochs) | wall / CPU s | final recon | consistency | fine-tune top-1 | linear probe | kNN |',
  '|---|---|---|---|---|---|---|---|---|',
  ...results.map((r) => `| ${r.name} | ${r.budgetMinutes !== null ? `${r.budgetMinutes} min` : r.method === 'scratch' ? 'none' : 'equal epochs'} | ` +
    `${r.pretrainSteps} (${r.pretrainEpochs.toFixed(2)}) | ${r.pretrainWallSeconds.toFixed(0)} / ${r.pretrainCpuSeconds.toFixed(0)} | ` +
    `${r.finalRecon === null ? '—' : r.finalRecon.toFixed(4)} | ${r.consistency === null ? '—' : r.consistency.toPrecision(3)} | ` +
    `${pct(r.finetuneTop1)} | ${pct(r.linearProbe)} | ${pct(r.knn)} |`),
].join('\n');
writeFileSync(path.join(out, 'results.md'), `CPU: ${manifest.cpu}, one thread per run\n\n${table}\n`);
const budgeted = results.filter((r) => r.budgetMinutes !== null);
// x: the measured wall time of each run (a budget is a target; a busy machine can stretch a run)
const points = budgeted.flatMap((r) => [
  { method: r.method, minutes: r.pretrainWallSeconds / 60, metric: 'fine-tune', value: r.finetuneTop1 },
  { method: r.method, minutes: r.pretrainWallSeconds / 60, metric: 'linear probe', value: r.linearProbe! },
  { method: r.method, minutes: r.pretrainWallSeconds / 60, metric: 'kNN', value: r.knn! },
]);
const scratch = results.find((r) => r.method === 'scratch')!;
await writeChart(await accuracyVsTimeSvg(points, [{ metric: 'fine-tune', label: 'no pretraining', value: scratch.finetuneTop1 }]), path.join(out, 'accuracy'));
console.log(`\n${table}\n\nwritten: ${out}/results.md, accuracy.svg/png`);

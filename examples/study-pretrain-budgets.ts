// The pretraining half of the fine-tuning study (examples/README.md, "Fine-tuning: MAE vs EMAE
// at equal pretraining time"): MAE (K = 1) and EMAE (K = 4), the same small ViT and seed, each
// pretrained on the Fashion-MNIST training set for equal wall-clock budgets that double, plus MAE
// for the epochs EMAE did in the largest budget (equal epochs). Every run is one thread.
//
// A budget is turned into a step count before the run (so that each run's warm-up and cosine
// schedule complete): each arm's seconds per step are measured first, in this process, on the
// same thread, and steps = budget / (seconds per step). The wall time and the process's CPU time
// of every run are recorded next to its budget, so a run slowed by a busy machine shows.
//   node --import=tsx examples/study-pretrain-budgets.ts [--budgets 5,10,20] [--out runs/ft-study]
//        [--dir /usr/share/datasets/fashion-mnist] [--batch 64] [--train-count 60000] [--calibrate-steps 30]
// examples/study-finetune.ts then fine-tunes, probes and tabulates what this writes.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { EMAE, Trainer, loadIdx } from '../lib/index.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}
const dir = arg('dir', '/usr/share/datasets/fashion-mnist');
const out = arg('out', path.join('runs', 'ft-study'));
const budgets = arg('budgets', '5,10,20').split(',').map(Number);  // minutes per arm
const batch = Number(arg('batch', '64'));
const trainCount = Number(arg('train-count', '60000')), calibrateSteps = Number(arg('calibrate-steps', '30'));
if (!existsSync(path.join(dir, 'train-images-idx3-ubyte.gz'))) {
  console.error(`Fashion-MNIST not found at ${dir}: sudo apt-get install dataset-fashion-mnist, or pass --dir`);
  process.exit(2);
}
if (budgets.some((b) => !(b > 0))) { console.error('--budgets: positive minutes, comma-separated'); process.exit(2); }

export const studyModel = {
  imageSize: 32, patchSize: 4, channels: 1, embedDim: 96, depth: 4, numHeads: 3,
  decoderEmbedDim: 64, decoderDepth: 2, decoderNumHeads: 4, maskRatio: 0.75, seed: 0, device: 'cpu' as const, threads: 1,
};
const norm = { mean: [0.286], std: [0.353] };
const all = await loadIdx(path.join(dir, 'train-images-idx3-ubyte.gz'), { padTo: 32, normalization: norm });
const train = { ...all, count: Math.min(trainCount, all.count), images: all.images.subarray(0, Math.min(trainCount, all.count) * 32 * 32) };
const blr = 1.5e-3;

// seconds per step of each arm: 5 steps to warm up, then calibrateSteps timed, one thread
async function secondsPerStep(parts: number): Promise<number> {
  const m = await EMAE.create({ ...studyModel, parts });
  let t0 = 0;
  const trainer = new Trainer(m, train, {
    batchSize: batch, steps: 5 + calibrateSteps, blr, seed: 1,
    onStep: (s) => { if (s.step === 5) t0 = performance.now(); },
  });
  await trainer.run();
  await m.dispose();
  return (performance.now() - t0) / 1000 / calibrateSteps;
}

mkdirSync(out, { recursive: true });
const manifestFile = path.join(out, 'pretrain.json');
interface RunRecord {
  name: string; method: 'MAE' | 'EMAE'; parts: number; budgetMinutes: number | null; steps: number; epochs: number;
  wallSeconds: number; cpuSeconds: number; secondsPerStep: number; finalRecon: number; weights: string; log: string;
}
const manifest: { model: typeof studyModel; batch: number; blr: number; secondsPerStep: Record<string, number>; runs: RunRecord[]; cpu: string } =
  existsSync(manifestFile) ? JSON.parse(readFileSync(manifestFile, 'utf8')) : { model: studyModel, batch, blr, secondsPerStep: {}, runs: [], cpu: '' };
const { cpus } = await import('node:os');
manifest.cpu = cpus()[0]?.model ?? 'unknown';
if (!manifest.secondsPerStep.MAE) {
  manifest.secondsPerStep = { MAE: await secondsPerStep(1), EMAE: await secondsPerStep(4) };
  writeFileSync(manifestFile, JSON.stringify(manifest, null, 2));
}
console.log(`seconds per step (1 thread, batch ${batch}): MAE ${manifest.secondsPerStep.MAE.toFixed(3)}, EMAE ${manifest.secondsPerStep.EMAE.toFixed(3)}`);
const stepsPerEpoch = Math.floor(train.count / batch);

async function pretrain(name: string, method: 'MAE' | 'EMAE', steps: number, budgetMinutes: number | null): Promise<RunRecord> {
  const done = manifest.runs.find((r) => r.name === name);
  if (done) { console.log(`${name}: done before (${done.steps} steps)`); return done; }
  const parts = method === 'MAE' ? 1 : 4;
  const runDir = path.join(out, name);
  const m = await EMAE.create({ ...studyModel, parts });
  let finalRecon = NaN;
  const trainer = new Trainer(m, train, {
    batchSize: batch, steps, blr, seed: 0, outDir: runDir, overwrite: true,
    onStep: (s) => {
      finalRecon = s.recon;
      if (s.step % 200 === 0 || s.step === steps) console.log(`  ${name}: step ${s.step}/${steps} recon ${s.recon.toFixed(4)} consistency ${s.consistency.toFixed(4)}`);
    },
  });
  const cpu0 = process.cpuUsage(), t0 = performance.now();
  await trainer.run();
  const wallSeconds = (performance.now() - t0) / 1000, cpu = process.cpuUsage(cpu0);
  const weights = path.join(runDir, 'weights.safetensors');
  await m.saveWeights(weights);
  await m.dispose();
  const record: RunRecord = {
    name, method, parts, budgetMinutes, steps, epochs: steps / stepsPerEpoch, wallSeconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6, secondsPerStep: wallSeconds / steps, finalRecon, weights, log: path.join(runDir, 'log.jsonl'),
  };
  manifest.runs.push(record);
  writeFileSync(manifestFile, JSON.stringify(manifest, null, 2));
  console.log(`${name}: ${steps} steps (${record.epochs.toFixed(2)} epochs) in ${wallSeconds.toFixed(0)} s wall, ${record.cpuSeconds.toFixed(0)} s CPU`);
  return record;
}

// interleaved, so that a change in the machine's load falls on both arms alike
for (const minutes of budgets)
  for (const method of ['MAE', 'EMAE'] as const)
    await pretrain(`${method}-${minutes}min`, method, Math.max(1, Math.round((minutes * 60) / manifest.secondsPerStep[method])), minutes);
const largest = manifest.runs.find((r) => r.name === `EMAE-${Math.max(...budgets)}min`)!;
await pretrain(`MAE-${largest.steps}steps-equal-epochs`, 'MAE', largest.steps, null);
console.log(`written: ${manifestFile}`);

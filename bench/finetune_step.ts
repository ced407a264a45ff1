// CPU benchmark: one fine-tuning step (forward, cross-entropy, backward, layer-decay AdamW) of our
// Classifier next to the same step in PyTorch on the CPU (bench/torch_finetune_step.py: MAE's
// models_vit as scripts/make_finetune_golden.py writes it) with the same preset encoder, batch
// and threads, in the same run, reported as a ratio (ours / PyTorch, lower is better). Global
// pool, 10 classes, label smoothing 0.1, drop path 0 on both sides; fresh random images and labels
// each step, drawn outside the timed region.
//   node --import=tsx bench/finetune_step.ts [--preset cpu-tiny|cpu-small|all] [--threads T]
//        [--iters N] [--warmup W] [--batch B] [--python PATH]
// Defaults: both presets, threads min(2, CPUs), 5 timed steps after 2 warm-up steps, batch 32
// (cpu-tiny) / 16 (cpu-small), .venv/bin/python if it exists else python3.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Classifier, presets } from '../lib/index.js';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const { values: argv } = parseArgs({
  options: {
    preset: { type: 'string', default: 'all' },
    threads: { type: 'string', default: String(Math.min(2, os.cpus().length)) },
    iters: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2' },
    batch: { type: 'string' },
    python: { type: 'string' },
  },
});
const names = argv.preset === 'all' ? (['cpu-tiny', 'cpu-small'] as const) : [argv.preset as 'cpu-tiny' | 'cpu-small'];
for (const n of names) if (n !== 'cpu-tiny' && n !== 'cpu-small') throw new Error(`--preset: cpu-tiny, cpu-small or all, got '${n}'`);
const threads = Number(argv.threads), iters = Number(argv.iters), warmup = Number(argv.warmup);
const python = argv.python ?? (existsSync(path.join(root, '.venv/bin/python')) ? path.join(root, '.venv/bin/python') : 'python3');
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

console.log(`CPU: ${os.cpus()[0]?.model ?? 'unknown'}, ${threads} thread(s)`);
console.log('| preset | batch | ours ms | PyTorch ms | ratio |');
console.log('|---|---|---|---|---|');
for (const name of names) {
  const p = presets[name], batch = Number(argv.batch ?? (name === 'cpu-tiny' ? 32 : 16)), classes = 10;
  const clf = await Classifier.create({ preset: name, numClasses: classes, dropPath: 0, device: 'cpu', threads });
  const per = p.channels! * p.imageSize! * p.imageSize!;
  const times: number[] = [];
  for (let i = 0; i < warmup + iters; i++) {
    const images = Float32Array.from({ length: batch * per }, () => Math.random() * 2 - 1);
    const labels = Int32Array.from({ length: batch }, () => Math.floor(Math.random() * classes));
    const t0 = performance.now();
    await clf.trainStep({ images, labels, batchSize: batch }, { lr: 1e-3, weightDecay: 0.05, layerDecay: 0.75 });
    if (i >= warmup) times.push(performance.now() - t0);
  }
  await clf.dispose();
  const ours = median(times);
  const r = spawnSync(python, [path.join(root, 'bench/torch_finetune_step.py'), '--image', String(p.imageSize), '--patch', String(p.patchSize),
    '--channels', String(p.channels), '--embed-dim', String(p.embedDim), '--depth', String(p.depth), '--heads', String(p.numHeads),
    '--mlp-ratio', String(p.mlpRatio), '--classes', String(classes), '--batch', String(batch), '--threads', String(threads),
    '--iters', String(iters), '--warmup', String(warmup)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`PyTorch side failed (${python}): ${r.stderr.trim().split('\n').pop()}`);
  const torch = JSON.parse(r.stdout.trim().split('\n').pop()!) as { ms: number };
  console.log(`| ${name} | ${batch} | ${ours.toFixed(0)} | ${torch.ms.toFixed(0)} | ${(ours / torch.ms).toFixed(2)} |`);
}

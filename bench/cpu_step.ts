// CPU benchmark: one EMAE training step (forward, backward, AdamW) on our CPU backend next to the
// same step in PyTorch on the CPU with the same thread count, in the same run, as a ratio.
//   node --import=tsx bench/cpu_step.ts [--preset cpu-tiny|cpu-small|all] [--parts 4|1|all]
//        [--threads 2] [--iters 5] [--warmup 2] [--python .venv/bin/python] [--json out.json]
// Each configuration runs in its own child process so that peak RSS is per configuration.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { EMAE, ParallelMasker, type PresetName } from '../lib/index.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}
const BATCH: Record<string, number> = { 'cpu-tiny': 32, 'cpu-small': 16 };
const threads = Number(arg('threads', String(Math.min(2, os.availableParallelism()))));
const iters = Number(arg('iters', '5'));
const warmup = Number(arg('warmup', '2'));

async function child(preset: PresetName, parts: number) {
  const B = BATCH[preset];
  const model = await EMAE.create({ preset, parts, device: 'cpu', threads, seed: 0 });
  const c = model.config;
  const masker = ParallelMasker.fromConfig(c, 1);
  const times: number[] = [];
  for (let i = 0; i < warmup + iters; i++) {
    const images = Float32Array.from({ length: B * c.channels * c.imageSize * c.imageSize }, () => Math.random() * 2 - 1);
    const permutation = masker.next(B);
    const t0 = performance.now();
    await model.trainStep({ images, permutation, batchSize: B }, { lr: (1.5e-4 * B) / 256 });
    if (i >= warmup) times.push(performance.now() - t0);
  }
  await model.dispose();
  times.sort((a, b) => a - b);
  console.log(JSON.stringify({ ms_median: times[Math.floor(times.length / 2)], ms_min: times[0],
    peak_rss_mb: process.resourceUsage().maxRSS / 1024 }));
}

if (process.argv.includes('--child')) {
  await child(arg('preset', 'cpu-tiny') as PresetName, Number(arg('parts', '4')));
  process.exit(0);
}

const presetsToRun = arg('preset', 'all') === 'all' ? ['cpu-tiny', 'cpu-small'] : [arg('preset', 'cpu-tiny')];
const partsToRun = arg('parts', 'all') === 'all' ? [4, 1] : [Number(arg('parts', '4'))];
const python = arg('python', existsSync('.venv/bin/python') ? '.venv/bin/python' : 'python3');
const torchOk = spawnSync(python, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
if (!torchOk) console.log(`PyTorch is not importable with ${python}: printing our numbers only`);
const self = fileURLToPath(import.meta.url);
const cpu = readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)?.[1] ?? os.cpus()[0]?.model;
console.log(`${cpu}, ${os.availableParallelism()} logical CPUs; threads ${threads}, iters ${iters}, warm-up ${warmup}`);

const rows: any[] = [];
for (const preset of presetsToRun)
  for (const parts of partsToRun) {
    const ours = spawnSync(process.execPath, ['--import=tsx', self, '--child', '--preset', preset, '--parts', String(parts),
      '--threads', String(threads), '--iters', String(iters), '--warmup', String(warmup)], { encoding: 'utf8' });
    if (ours.status !== 0) throw new Error(`our benchmark failed: ${ours.stderr}`);
    const o = JSON.parse(ours.stdout.trim().split('\n').pop()!);
    let p: any = {};
    if (torchOk) {
      const r = spawnSync(python, ['bench/torch_cpu_step.py', preset, '--parts', String(parts), '--threads', String(threads),
        '--iters', String(iters), '--warmup', String(warmup)], { encoding: 'utf8' });
      p = r.status === 0 ? JSON.parse(r.stdout.trim().split('\n').pop()!) : { error: r.stderr.trim().split('\n').pop() };
    }
    const row = { preset, mode: parts === 1 ? 'MAE (K=1)' : `EMAE (K=${parts})`, batch: BATCH[preset], threads,
      ours_ms: o.ms_median, pytorch_ms: p.ms_per_step_median, ratio: p.ms_per_step_median ? o.ms_median / p.ms_per_step_median : NaN,
      ours_rss_mb: o.peak_rss_mb, pytorch_rss_mb: p.peak_rss_mb, pytorch_error: p.error };
    rows.push(row);
    console.error(JSON.stringify(row));
  }
const f = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
console.log('\n| preset | mode | batch | threads | ours ms/step | PyTorch ms/step | ratio (ours/PyTorch) | ours peak RSS MB | PyTorch peak RSS MB |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const r of rows)
  console.log(`| ${r.preset} | ${r.mode} | ${r.batch} | ${r.threads} | ${f(r.ours_ms)} | ${f(r.pytorch_ms)} | ${f(r.ratio, 2)} | ${f(r.ours_rss_mb)} | ${f(r.pytorch_rss_mb)} |`);
const json = arg('json', '');
if (json) writeFileSync(json, JSON.stringify(rows, null, 1));

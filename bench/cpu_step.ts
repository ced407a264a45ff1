// CPU benchmark: one EMAE training step (forward, backward, AdamW) on our CPU backend next to the
// same step in PyTorch on the CPU (bench/torch_cpu_step.py) with the same preset, parts, batch and
// thread count, in the same run, reported as a ratio (ours / PyTorch, lower is better).
//   node --import=tsx bench/cpu_step.ts [--preset cpu-tiny|cpu-small|all] [--parts K|all]
//        [--threads T] [--iters N] [--warmup W] [--batch B] [--rounds R] [--wait-idle S] [--python PATH]
//        [--matmul fp32|bf16]
//        [--json out.json] [--profile]
// Defaults: all presets, parts 4 (EMAE) and 1 (plain MAE), threads min(2, CPUs), 5 timed steps
// after 2 warm-up steps, the preset's batch (cpu-tiny 32, cpu-small 16), .venv/bin/python if it
// exists else python3. Each configuration runs in its own child process (this script with
// --child, one JSON line out) so that the peak RSS is that configuration's alone. Images and
// permutations are drawn outside the timed region, fresh each step, on both sides.
// --matmul bf16 runs our step with cpuMatmul 'bf16' (GEMM operands in bf16 on AMX tiles, else
// with AVX512-BF16; the header names which) and PyTorch's under torch.autocast('cpu',
// dtype=torch.bfloat16) — bf16 against bf16, never against PyTorch fp32. Default fp32 on both sides.
// --profile: our child creates its model with EMAE_PROFILE=1 (the per-op profiler, a host clock
// around every Backend op) and prints a markdown table of the top ops and the gap line (step time
// against the ops' time) for the timed steps; the parent prints it before the table.
// --rounds R (default 1) measures every configuration R times, alternating ours and PyTorch, and
// keeps for each side the round with the lowest median: on a shared machine another process can
// slow a whole child down (PyTorch's 2-thread step by up to ~35× in our runs), and R = 2 or 3 makes
// the ratio robust to that at R times the run time. The last table column says how much CPU other
// processes took while each side ran (a warning names rows above 10%); --wait-idle S waits up to S
// seconds before each child until the CPUs are idle (other processes < 10% over 1 s).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { EMAE, ParallelMasker, cpuInfo, formatProfile, presets, type PresetName } from '../lib/index.js';

const self = fileURLToPath(import.meta.url);
const root = path.dirname(path.dirname(self));
const PRESETS = ['cpu-tiny', 'cpu-small'] as const;
/** other processes' CPU share above which a row is flagged as measured on a contended machine */
const CONTENDED_PCT = 10;
const DEFAULT_BATCH: Record<(typeof PRESETS)[number], number> = { 'cpu-tiny': 32, 'cpu-small': 16 };

const { values: argv } = parseArgs({
  options: {
    preset: { type: 'string', default: 'all' },
    parts: { type: 'string', default: 'all' },
    threads: { type: 'string', default: String(Math.min(2, os.availableParallelism())) },
    iters: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '1' },
    'wait-idle': { type: 'string', default: '0' },
    batch: { type: 'string' },
    python: { type: 'string' },
    matmul: { type: 'string', default: 'fp32' },
    json: { type: 'string' },
    profile: { type: 'boolean', default: false },
    child: { type: 'boolean', default: false },
  },
});
function int(name: 'threads' | 'iters' | 'warmup' | 'batch' | 'parts' | 'rounds' | 'wait-idle', min: number): number {
  const v = Number(argv[name]);
  if (!Number.isInteger(v) || v < min) throw new RangeError(`--${name} must be an integer >= ${min}, got ${argv[name]}`);
  return v;
}
const threads = int('threads', 1);
const iters = int('iters', 1);
const warmup = int('warmup', 0);
const rounds = int('rounds', 1);
const waitIdle = int('wait-idle', 0);
const matmul = argv.matmul as 'fp32' | 'bf16';
if (matmul !== 'fp32' && matmul !== 'bf16') throw new RangeError(`--matmul must be fp32 or bf16, got ${argv.matmul}`);

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** One configuration, in this (child) process: prints one JSON line. */
async function child(preset: PresetName, parts: number, batch: number): Promise<void> {
  const baseRssMb = process.resourceUsage().maxRSS / 1024;  // node + tsx + the addon, before the model
  if (argv.profile) process.env.EMAE_PROFILE = '1';  // read when the model is created
  const model = await EMAE.create({ preset, parts, device: 'cpu', threads, seed: 0, cpuMatmul: matmul });
  const c = model.config;
  const masker = ParallelMasker.fromConfig(c, 1);
  const times: number[] = [];
  let loss = NaN;
  for (let i = 0; i < warmup + iters; i++) {
    const images = new Float32Array(batch * c.channels * c.imageSize * c.imageSize);
    for (let j = 0; j < images.length; j++) images[j] = Math.random() * 2 - 1;
    const permutation = masker.next(batch);
    if (argv.profile && i === warmup) await model.profile({ reset: true });  // the timed steps only
    const t0 = performance.now();
    const r = await model.trainStep({ images, permutation, batchSize: batch }, { lr: (1.5e-4 * batch) / 256 });
    const dt = performance.now() - t0;
    if (i >= warmup) times.push(dt);
    loss = r.loss;
  }
  if (argv.profile) {
    const report = await model.profile();
    if (!report.enabled) throw new Error(report.reason);
    console.log(`\n#### op profile: ${preset} K = ${parts}, batch ${batch}, ${threads} threads, ${iters} steps\n`);
    console.log(formatProfile(report, { top: 15 }));
  }
  await model.dispose();
  console.log(JSON.stringify({
    impl: 'emae', preset, parts, batch, threads, ms_per_step_median: median(times), ms_per_step_min: Math.min(...times),
    peak_rss_mb: process.resourceUsage().maxRSS / 1024, base_rss_mb: baseRssMb, last_loss: loss,
  }));
}

/** Busy and total jiffies of all CPUs (/proc/stat), or null where there is none. */
function cpuJiffies(): { busy: number; total: number } | null {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - f[3] - (f[4] ?? 0), total };
  } catch {
    return null;
  }
}

/** Waits (up to `seconds`) until other processes use under CONTENDED_PCT of the CPUs over 1 s. */
function waitForIdle(seconds: number): void {
  const deadline = performance.now() + seconds * 1000;
  const sleep = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    const a = cpuJiffies();
    Atomics.wait(sleep, 0, 0, 1000);
    const b = cpuJiffies();
    if (!a || !b || (100 * (b.busy - a.busy)) / Math.max(1, b.total - a.total) < CONTENDED_PCT) return;
    if (performance.now() > deadline) {
      console.error(`(CPUs still busy after ${seconds} s of waiting; measuring anyway)`);
      return;
    }
  }
}

/**
 * Runs a child to completion under bash's `times`, and estimates how much CPU other processes took
 * meanwhile: all CPUs' busy time (/proc/stat) minus the child's own user+system time, as a share
 * of the CPUs over the child's wall time. A few percent is bookkeeping; much more means the row
 * was measured on a contended machine.
 */
function runMeasured(cmd: string, args: string[]): { status: number | null; stdout: string; stderr: string; othersPct: number } {
  if (waitIdle > 0) waitForIdle(waitIdle);
  const before = cpuJiffies();
  const t0 = performance.now();
  const r = spawnSync('bash', ['-c', '"$@"; rc=$?; times; exit $rc', 'bench', cmd, ...args], { encoding: 'utf8', cwd: root });
  const wall = (performance.now() - t0) / 1000;
  const after = cpuJiffies();
  const m = r.stdout?.trim().split('\n').pop()?.match(/^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$/);
  let othersPct = NaN;
  if (before && after && m) {
    const own = Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4]);
    const ticksPerCpu = (after.total - before.total) / os.availableParallelism();  // jiffies per second, per CPU
    const busy = ((after.busy - before.busy) / ticksPerCpu) * wall;                 // CPU-seconds
    othersPct = Math.max(0, (100 * (busy - own)) / (wall * os.availableParallelism()));
  }
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr || String(r.error ?? ''), othersPct };
}

function lastJsonLine(stdout: string): any {
  const line = stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  if (line === undefined) throw new Error(`no JSON line in: ${stdout.slice(-500)}`);
  return JSON.parse(line);
}

if (argv.child) {
  await child(argv.preset as PresetName, int('parts', 1), int('batch', 1));
  process.exit(0);
}

// ---- parent: run every configuration, ours then PyTorch, and print the table ---------------------
const presetsToRun = argv.preset === 'all' ? [...PRESETS] : [argv.preset as (typeof PRESETS)[number]];
for (const p of presetsToRun) {
  if (!PRESETS.includes(p)) throw new RangeError(`--preset must be one of ${PRESETS.join(', ')} or all, got ${p}`);
}
const partsToRun = argv.parts === 'all' ? [4, 1] : [int('parts', 1)];
for (const p of presetsToRun) {
  const total = Math.round(1 / (1 - (presets[p].maskRatio ?? 0.75)));
  for (const k of partsToRun) if (k > total) throw new RangeError(`--parts ${k}: ${p} has K_total = ${total}`);
}
const python = argv.python ?? (existsSync(path.join(root, '.venv/bin/python')) ? path.join(root, '.venv/bin/python') : 'python3');
const probe = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
const torchVersion = probe.status === 0 ? probe.stdout.trim() : null;
if (torchVersion === null) {
  const why = probe.error ? probe.error.message : (probe.stderr.trim().split('\n').pop() ?? `exit ${probe.status}`);
  console.log(`*** PyTorch is not importable with ${python} (${why}): printing our numbers only. ` +
    `Install it (python3 -m venv .venv && .venv/bin/pip install torch numpy) or pass --python. ***`);
}
const cpu = readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)?.[1] ?? os.cpus()[0]?.model ?? 'unknown CPU';
console.log(`${cpu}, ${os.availableParallelism()} logical CPUs; threads ${threads}, ${iters} timed steps after ${warmup} warm-up` +
  `${rounds > 1 ? `, best of ${rounds} rounds` : ''}; matmuls ${matmul === 'bf16' ? `bf16 (ours: cpuMatmul 'bf16' on ${cpuInfo().bf16Kernel || 'no bf16 kernel'}; PyTorch: bf16 autocast)` : 'fp32'}; ` +
  `PyTorch ${torchVersion ?? 'n/a'} (${python})`);

interface Row {
  preset: string; mode: string; parts: number; batch: number; threads: number;
  ours_ms: number; ours_ms_min: number; pytorch_ms?: number; pytorch_ms_min?: number; ratio?: number;
  ours_rss_mb: number; ours_base_rss_mb: number; pytorch_rss_mb?: number; pytorch_error?: string;
  ours_round_medians: number[]; pytorch_round_medians?: number[];
  /** CPU share other processes took while the chosen child ran (see runMeasured) */
  ours_others_cpu_pct: number; pytorch_others_cpu_pct?: number;
}
const rows: Row[] = [];
const startedAll = performance.now();
for (const preset of presetsToRun)
  for (const parts of partsToRun) {
    const batch = argv.batch !== undefined ? int('batch', 1) : DEFAULT_BATCH[preset];
    const common = ['--parts', String(parts), '--threads', String(threads), '--iters', String(iters), '--warmup', String(warmup)];
    const runOurs = () => {
      const r = runMeasured(process.execPath, ['--import=tsx', self, '--child', '--preset', preset, '--batch', String(batch),
        '--matmul', matmul, ...common, ...(argv.profile ? ['--profile'] : [])]);
      if (r.status !== 0) throw new Error(`our benchmark failed (${preset}, K=${parts}): ${r.stderr}`);
      if (argv.profile) console.log(r.stdout.split('\n').filter((l) => /^(\||steps |####|$)/.test(l)).join('\n').trim() + '\n');
      const o = lastJsonLine(r.stdout);
      if (!Number.isFinite(o.last_loss)) throw new Error(`our ${preset} K=${parts} step gave a non-finite loss`);
      return { ...o, others_pct: r.othersPct };
    };
    const runTorch = () => {
      const r = runMeasured(python, [path.join(root, 'bench/torch_cpu_step.py'), preset, '--batch', String(batch),
        ...(matmul === 'bf16' ? ['--bf16'] : []), ...common]);
      return r.status === 0 ? { ...lastJsonLine(r.stdout), others_pct: r.othersPct }
        : { error: r.stderr.trim().split('\n').pop() ?? `exit ${r.status}` };
    };
    let o: any, p: any;
    const oursRounds: number[] = [], torchRounds: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const oo = runOurs();
      oursRounds.push(oo.ms_per_step_median);
      if (o === undefined || oo.ms_per_step_median < o.ms_per_step_median) o = oo;
      if (torchVersion !== null) {
        const pp = runTorch();
        if (pp.error === undefined) torchRounds.push(pp.ms_per_step_median);
        if (p === undefined || p.error !== undefined || (pp.error === undefined && pp.ms_per_step_median < p.ms_per_step_median)) p = pp;
      }
    }
    const row: Row = {
      preset, mode: parts === 1 ? 'MAE (K=1)' : `EMAE (K=${parts})`, parts, batch, threads,
      ours_ms: o.ms_per_step_median, ours_ms_min: o.ms_per_step_min, ours_rss_mb: o.peak_rss_mb, ours_base_rss_mb: o.base_rss_mb,
      ours_round_medians: oursRounds, ours_others_cpu_pct: o.others_pct,
    };
    if (p !== undefined && p.error === undefined) {
      Object.assign(row, { pytorch_ms: p.ms_per_step_median, pytorch_ms_min: p.ms_per_step_min, pytorch_rss_mb: p.peak_rss_mb,
        pytorch_round_medians: torchRounds, pytorch_others_cpu_pct: p.others_pct, ratio: o.ms_per_step_median / p.ms_per_step_median });
    } else if (p !== undefined) {
      row.pytorch_error = p.error;
    }
    rows.push(row);
    console.error(JSON.stringify(row));
  }

const f = (x: number | undefined, d = 0) => (x !== undefined && Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const ms = (med: number | undefined, min: number | undefined) => (med === undefined ? 'n/a' : `${f(med)} (${f(min)})`);
console.log(`\nms/step: median (min) of the timed steps${rounds > 1 ? ' in the best round' : ''}; ` +
  'ratio = ours / PyTorch medians, lower is better\n');
console.log('| preset | mode | batch | threads | ours ms/step | PyTorch ms/step | ratio (ours/PyTorch) | ours peak RSS MB | PyTorch peak RSS MB | other processes\' CPU % (ours / PyTorch) |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.preset} | ${r.mode} | ${r.batch} | ${r.threads} | ${ms(r.ours_ms, r.ours_ms_min)} | ` +
    `${ms(r.pytorch_ms, r.pytorch_ms_min)} | ${f(r.ratio, 2)} | ${f(r.ours_rss_mb)} | ${f(r.pytorch_rss_mb)} | ` +
    `${f(r.ours_others_cpu_pct)} / ${f(r.pytorch_others_cpu_pct)} |`);
}
const contended = rows.filter((r) => Math.max(r.ours_others_cpu_pct, r.pytorch_others_cpu_pct ?? 0) > CONTENDED_PCT);
if (contended.length > 0) {
  console.log(`\nWARNING: other processes took over ${CONTENDED_PCT}% of the CPUs while ${contended.map((r) => `${r.preset} ${r.mode}`).join(', ')} ` +
    `ran: those rows are not trustworthy. Rerun on a quiet machine, or with --rounds 3 --wait-idle 60.`);
}
for (const r of rows) if (r.pytorch_error) console.log(`PyTorch failed on ${r.preset} ${r.mode}: ${r.pytorch_error}`);
console.log(`\nour process before creating the model: ${f(rows[0]?.ours_base_rss_mb)} MB (node + tsx + addon); ` +
  `total bench time ${((performance.now() - startedAll) / 1000).toFixed(0)} s`);
if (argv.json) {
  writeFileSync(argv.json, JSON.stringify({ cpu, cpus: os.availableParallelism(), threads, iters, warmup, rounds, pytorch: torchVersion,
    date: new Date().toISOString(), rows }, null, 1));
}

// GPU benchmark: an EMAE training step (vit-base/16 at 224², K = 4 by default) on our CUDA
// backend next to the same step in PyTorch (bf16 autocast, SDPA, fused AdamW) on the same card,
// in the same run. Reports images/s, peak memory and model FLOPs utilization against the card's
// measured bf16 matrix rate (from the PyTorch script), and the ratio.
//   node --import=tsx bench/gpu_step.ts [--preset vit-base] [--parts 4] [--batches 64,128]
//        [--iters 10] [--warmup 3] [--python python3] [--json out.json] [--profile] [--no-pytorch]
//        [--compile] [--results bench/results/gpu-step-<card>-<date>.json]
// --profile: our model is created with EMAE_PROFILE=1 (the per-op profiler, CUDA events around
// every Backend op and step) and after the timed steps a markdown table of the top ops and the
// gap line (the steps' device time against their ops' time) are printed; the ms/step of such a
// run include the profiler's event records, so compare them with a run without --profile.
// --no-pytorch: our side only.
// --compile: PyTorch also with torch.compile of the same model (a second run per batch).
// --results FILE: appends one object per configuration to the JSON array in FILE (issue 12's
// record: card, commit, preset, parts, batch, ours_ms, torch_eager_ms, torch_compile_ms,
// ours_peak_mb, torch_peak_mb, mfu); the commit is EMAE_COMMIT, else `git rev-parse HEAD`.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { EMAE, ParallelMasker, cudaInfo, formatProfile, presets, type PresetName, type ProfileReport } from '../lib/index.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}
const preset = arg('preset', 'vit-base') as PresetName;
const parts = Number(arg('parts', '4'));
const batches = arg('batches', '64,128').split(',').map(Number);
const iters = Number(arg('iters', '10'));
const warmup = Number(arg('warmup', '3'));
const python = arg('python', 'python3');
const jsonOut = arg('json', '');
const profile = process.argv.includes('--profile');
const withPytorch = !process.argv.includes('--no-pytorch');
const withCompile = process.argv.includes('--compile');
const resultsOut = arg('results', '');
if (profile) process.env.EMAE_PROFILE = '1';  // read when the model is created

/** Model FLOPs of one training step (forward + backward, no recomputation), as in MFU accounting. */
function stepFlops(c: EMAE["config"], B: number): number {
  const K = c.parts, V = c.visiblePerPart, N = c.numPatches, P = c.patchDim;
  const S = B * K, T = 1 + V, Td = 1 + N;
  const linear = (rows: number, k: number, n: number, withInputGrad = true) => 2 * rows * k * n * (withInputGrad ? 3 : 2);
  const attention = (seqs: number, t: number, width: number) => 4 * seqs * t * t * width * 3;  // QKᵀ and PV, fwd + 2× bwd
  const block = (rows: number, seqs: number, t: number, d: number) =>
    linear(rows, d, 3 * d) + linear(rows, d, d) + linear(rows, d, c.mlpRatio * d) + linear(rows, c.mlpRatio * d, d) + attention(seqs, t, d);
  let f = linear(S * V, P, c.embedDim, false);
  f += c.depth * block(S * T, S, T, c.embedDim);
  f += linear(S * T, c.embedDim, c.decoderEmbedDim);
  f += c.decoderDepth * block(S * Td, S, Td, c.decoderEmbedDim);
  f += linear(S * Td, c.decoderEmbedDim, P);
  return f;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function ours(B: number) {
  const before = cudaInfo().devices[0]?.freeMemory ?? 0;
  const model = await EMAE.create({ preset, parts, device: 'cuda', seed: 0 });
  const c = model.config;
  const masker = ParallelMasker.fromConfig(c, 1);
  const images = Float32Array.from({ length: B * c.channels * c.imageSize * c.imageSize }, () => Math.random() * 2 - 1);
  const perms = Array.from({ length: 4 }, () => masker.next(B));
  const times: number[] = [];
  let loss = 0;
  for (let i = 0; i < warmup + iters; i++) {
    if (profile && i === warmup) await model.profile({ reset: true });  // the timed steps only
    const t0 = performance.now();
    const r = await model.trainStep({ images, permutation: perms[i % 4], batchSize: B }, { lr: 1.5e-4 * B / 256 });
    const dt = performance.now() - t0;
    loss = r.loss;
    if (i >= warmup) times.push(dt);
  }
  const after = cudaInfo().devices[0]?.freeMemory ?? 0;
  const flops = stepFlops(c, B);
  let report: ProfileReport | undefined;
  if (profile) {
    const r = await model.profile();
    if (!r.enabled) throw new Error(r.reason);
    report = r;
    const d = info.devices[0];
    console.log(`\n#### op profile: ${preset} K = ${parts}, batch ${B}, ${iters} steps, GEMM ${d.gemmPath}, attention ${d.attentionPath}\n`);
    console.log(formatProfile(r, { top: 15 }));
  }
  await model.dispose();
  const ms = median(times);
  return { ms, min: Math.min(...times), imagesPerS: B / (ms / 1e3), memoryMb: (before - after) / 2 ** 20, flops, loss, report };
}

function pytorch(B: number, compile = false) {
  if (!withPytorch) return { error: 'not run (--no-pytorch)' };
  const r = spawnSync(python, ['bench/torch_gpu_step.py', '--preset', preset, '--parts', String(parts), '--batch', String(B),
    '--iters', String(Math.max(iters, 8)), '--warmup', String(compile ? Math.max(warmup, 3) : warmup), ...(compile ? ['--compile'] : [])],
  { encoding: 'utf8' });
  if (r.status !== 0) return { error: (r.stderr || r.stdout || String(r.error)).trim().split('\n').slice(-3).join(' | ') };
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

const info = cudaInfo();
if (!info.compiled || info.devices.length === 0) {
  console.error(`no usable CUDA device: ${info.error ?? 'none found'}`);
  process.exit(2);
}
console.log(`device: ${info.devices[0].name} (sm_${info.devices[0].computeCapability.replace('.', '')}), preset ${preset}, K = ${parts}, ` +
  `GEMM path ${info.devices[0].gemmPath} (EMAE_CUDA_GEMM), attention ${info.devices[0].attentionPath} (EMAE_CUDA_ATTENTION), ` +
  `step sync ${info.devices[0].stepSync} (EMAE_CUDA_STEP_SYNC), activations ${info.devices[0].activations} (EMAE_ACTIVATIONS)`);
if (!(preset in presets)) throw new RangeError(`unknown preset ${preset}`);
const rows: any[] = [];
for (const B of batches) {
  let mine;
  try {
    mine = await ours(B);
  } catch (err) {
    mine = { error: (err as Error).message };
  }
  const theirs = pytorch(B);
  const compiled = withCompile ? pytorch(B, true) : { error: 'not run (no --compile)' };
  const rate = theirs.bf16_matmul_tflops ? theirs.bf16_matmul_tflops * 1e12 : NaN;
  const row = {
    batch: B, gemm_path: info.devices[0].gemmPath, attention_path: info.devices[0].attentionPath, step_sync: info.devices[0].stepSync,
    activations: info.devices[0].activations,
    ours_ms: mine.ms, ours_images_per_s: mine.imagesPerS, ours_peak_memory_mb: mine.memoryMb,
    ours_mfu: mine.flops && mine.ms ? mine.flops / (mine.ms / 1e3) / rate : NaN,
    pytorch_ms: theirs.ms_per_step_median, pytorch_images_per_s: theirs.images_per_s, pytorch_peak_memory_mb: theirs.peak_memory_mb,
    pytorch_mfu: mine.flops && theirs.ms_per_step_median ? mine.flops / (theirs.ms_per_step_median / 1e3) / rate : NaN,
    speedup_vs_pytorch: theirs.ms_per_step_median && mine.ms ? theirs.ms_per_step_median / mine.ms : NaN,
    pytorch_compile_ms: compiled.ms_per_step_median, pytorch_compile_peak_memory_mb: compiled.peak_memory_mb,
    speedup_vs_compile: compiled.ms_per_step_median && mine.ms ? compiled.ms_per_step_median / mine.ms : NaN,
    pytorch_compile_error: withCompile ? compiled.error : undefined,
    bf16_matmul_tflops: theirs.bf16_matmul_tflops, step_gflop: mine.flops ? mine.flops / 1e9 : NaN,
    ours_error: (mine as any).error, pytorch_error: theirs.error, ours_loss: (mine as any).loss,
    ...((mine as any).report ? { ours_profile: (mine as any).report } : {}),
  };
  rows.push(row);
  const { ours_profile: _, ...printed } = row;  // the profile is in the table above and in --json
  console.log(JSON.stringify(printed));
}
const fmt = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
console.log('\n| batch | ours ms/step | ours img/s | ours peak MB | ours MFU | PyTorch ms/step | PyTorch img/s | PyTorch peak MB | PyTorch MFU | speed-up (PyTorch ms / ours ms) |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const r of rows)
  console.log(`| ${r.batch} | ${fmt(r.ours_ms)} | ${fmt(r.ours_images_per_s)} | ${fmt(r.ours_peak_memory_mb, 0)} | ${fmt(100 * r.ours_mfu)}% | ${fmt(r.pytorch_ms)} | ${fmt(r.pytorch_images_per_s)} | ${fmt(r.pytorch_peak_memory_mb, 0)} | ${fmt(100 * r.pytorch_mfu)}% | ${fmt(r.speedup_vs_pytorch, 2)} |`);
if (withCompile) {
  console.log('\n| batch | ours ms/step | torch.compile ms/step | torch.compile peak MB | speed-up (compile ms / ours ms) |');
  console.log('|---|---|---|---|---|');
  for (const r of rows)
    console.log(`| ${r.batch} | ${fmt(r.ours_ms)} | ${fmt(r.pytorch_compile_ms)} | ${fmt(r.pytorch_compile_peak_memory_mb, 0)} | ${fmt(r.speedup_vs_compile, 2)} |`);
}
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ device: info.devices[0], preset, parts, rows }, null, 1));
if (resultsOut) {
  let commit = process.env.EMAE_COMMIT;
  if (!commit) {
    const git = spawnSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8' });
    commit = git.status === 0 ? git.stdout.trim() : 'unknown';
  }
  const records = existsSync(resultsOut) ? JSON.parse(readFileSync(resultsOut, 'utf8')) : [];
  for (const r of rows) {
    records.push({
      card: info.devices[0].name, commit, preset, parts, batch: r.batch,
      gemm_path: r.gemm_path, attention_path: r.attention_path, step_sync: r.step_sync, activations: r.activations,
      ours_ms: r.ours_ms ?? null, torch_eager_ms: r.pytorch_ms ?? null, torch_compile_ms: r.pytorch_compile_ms ?? null,
      ours_peak_mb: r.ours_peak_memory_mb ?? null, torch_peak_mb: r.pytorch_peak_memory_mb ?? null,
      mfu: Number.isFinite(r.ours_mfu) ? r.ours_mfu : null, bf16_matmul_tflops: r.bf16_matmul_tflops ?? null,
      ...(r.ours_error ? { ours_error: r.ours_error } : {}),
    });
  }
  writeFileSync(resultsOut, JSON.stringify(records, null, 1) + '\n');
}

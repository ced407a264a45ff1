// scripts/gpu-check.sh is the one script a GPU session runs, with minutes of device time: its
// plan is checked here, on any machine, through its DRY_RUN mode (each phase's environment and
// command printed, nothing run): the phases in priority order, the new paths' environment only
// where asked for, every file a phase names present, the budget respected, typos refused.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const script = 'scripts/gpu-check.sh';
const NEW_PATHS = ['EMAE_CUDA_ATTENTION=tc', 'EMAE_CUDA_GEMM=sm90', 'EMAE_CUDA_STEP_SYNC=once'];

interface Planned { name: string; limit?: number; env: string[]; command: string; skipped: boolean }

function dryRun(env: Record<string, string>): { status: number | null; stderr: string; planned: Planned[] } {
  const out = mkdtempSync(path.join(tmpdir(), 'gpu-check-'));
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('EMAE_CUDA_') && k !== 'EMAE_ACTIVATIONS'));
  const r = spawnSync('bash', [script], { encoding: 'utf8', env: { ...clean, DRY_RUN: '1', OUT: out, ...env } });
  const planned: Planned[] = [];
  const summary = existsSync(path.join(out, 'summary.md')) ? readFileSync(path.join(out, 'summary.md'), 'utf8') : '';
  for (const line of summary.split('\n')) {
    const run = /^- (\w+): limit (\d+) s: (.*)$/.exec(line);
    if (run) {
      const words = run[3].split(' ');
      const env = words.filter((w) => /^EMAE_\w+=/.test(w));
      planned.push({ name: run[1], limit: Number(run[2]), env, command: words.slice(env.length).join(' '), skipped: false });
    }
    const skipped = /^- (\w+): skipped: /.exec(line);
    if (skipped) planned.push({ name: skipped[1], env: [], command: '', skipped: true });
  }
  return { status: r.status, stderr: r.stderr, planned };
}

test('the first run verifies before it measures, and only the bf16 phases get the new paths', (t) => {
  const { status, planned } = dryRun({ PHASES: 'first' });
  t.is(status, 0);
  t.deepEqual(planned.map((p) => p.name),
    ['smoke', 'gemm', 'attention_check', 'classifier_check', 'elementwise_bf16_check', 'parity', 'parity_bf16', 'bench_bf16', 'op_profile', 'op_profile_bf16']);
  for (const p of planned) {
    const wantsNew = p.name.endsWith('_bf16');
    t.deepEqual(p.env, wantsNew ? NEW_PATHS : [], `${p.name}: ${p.env.join(' ')}`);
  }
  const parity = planned.find((p) => p.name === 'parity')!, bf16 = planned.find((p) => p.name === 'parity_bf16')!;
  t.is(bf16.command, parity.command, 'parity_bf16 runs the same tests as parity');
  t.true(planned.every((p) => p.limit! <= 540));
});

test('every phase the script documents is planned by first,second, and every file a phase names exists', (t) => {
  const text = readFileSync(script, 'utf8');
  const documented = [...text.slice(text.indexOf('# Phases:'), text.indexOf('set -uo')).matchAll(/^#   (\w+) {2,}/gm)].map((m) => m[1]);
  t.true(documented.length >= 14, documented.join(','));
  const { status, planned } = dryRun({});
  t.is(status, 0);
  const names = new Set(planned.map((p) => p.name));
  const expands: Record<string, string[]> = {
    kernels: ['attention_check', 'classifier_check', 'elementwise_bf16_check'], gemm_shapes: ['gemm_shapes_ours', 'gemm_shapes'],
    op_profile: ['op_profile', 'op_profile_bf16'], sanitizer: ['memcheck', 'racecheck', 'memcheck_bf16', 'racecheck_bf16'],
    gemm_sanitizer: ['gemm_memcheck', 'gemm_racecheck'], dist: ['dist_nccl', 'allreduce_nccl', 'dist_two_ranks', 'allreduce_mpi'], bench_sync: [],  // bench_sync: on request only
  };
  for (const phase of documented) for (const name of expands[phase] ?? [phase]) t.true(names.has(name), `${phase} → ${name} planned`);
  t.false(names.has('bench_sync'));
  for (const p of planned) {
    for (const word of p.command.split(' ')) {
      if (/^(scripts|bench|test)\/[\w./-]+\.(mjs|ts|py)$/.test(word)) t.true(existsSync(word), `${p.name}: ${word}`);
    }
  }
  t.true(planned.filter((p) => p.command.includes('bench/gpu_step.ts') && p.command.includes('--results')).length >= 4,
    'the step benchmarks append to the gpu-step JSON record');
});

test('bf16 activations are checked on the new paths, with the parity tests they change', (t) => {
  const { status, planned } = dryRun({ PHASES: 'parity_act,bench_act,parity' });
  t.is(status, 0);
  const act = planned.find((p) => p.name === 'parity_act')!, bench = planned.find((p) => p.name === 'bench_act')!;
  const parity = planned.find((p) => p.name === 'parity')!;
  for (const p of [act, bench]) t.deepEqual(p.env, ['EMAE_ACTIVATIONS=bf16', ...NEW_PATHS], `${p.name}: ${p.env.join(' ')}`);
  t.deepEqual(parity.env, [], 'the default paths stay fp32');
  t.regex(act.command, /test\/cuda-parity\.test\.ts test\/cuda-bf16\.test\.ts$/);
  t.regex(parity.command, /test\/cuda-bf16\.test\.ts/, 'the bf16 test (it sets its own switches) runs with the others');
  t.regex(bench.command, /bench\/gpu_step\.ts .*--results/);
});

test('a run never goes past its budget: with none left every phase is skipped, and the summary says so', (t) => {
  const { status, planned } = dryRun({ PHASES: 'first', BUDGET_S: '5' });
  t.is(status, 0);
  t.true(planned.length > 5);
  t.true(planned.every((p) => p.skipped), planned.filter((p) => !p.skipped).map((p) => p.name).join(','));
  // with 100 s, the phases whose own limit is longer are cut to what is left
  const short = dryRun({ PHASES: 'parity,bench_bf16', BUDGET_S: '100' });
  t.deepEqual(short.planned.map((p) => p.name), ['parity', 'bench_bf16']);
  for (const p of short.planned) t.true(!p.skipped && p.limit! <= 100 && p.limit! >= 90, `${p.name}: limit ${p.limit}`);
});

test('an unknown phase is refused before anything is unpacked or run', (t) => {
  const { status, stderr, planned } = dryRun({ PHASES: 'first,parity_bf61' });
  t.is(status, 2);
  t.regex(stderr, /unknown phase 'parity_bf61' \(known: smoke,gemm,/);
  t.deepEqual(planned, []);
});

test('every test title a phase selects with --match exists in the file it runs', (t) => {
  const { status, planned } = dryRun({});
  t.is(status, 0);
  let checked = 0;
  for (const p of planned) {
    const at = p.command.indexOf(' --match ');
    if (at < 0) continue;
    // the dry run prints the arguments joined by spaces: the pattern is the rest of the line
    const prefix = p.command.slice(at + ' --match '.length).replace(/\*$/, '');
    const files = p.command.slice(0, at).split(' ').filter((w) => /^test\/[\w.-]+\.test\.ts$/.test(w));
    t.true(files.length > 0, `${p.name}: names a test file`);
    const titles = files.map((f) => readFileSync(f, 'utf8')).join('\n');
    t.true(titles.includes(`'${prefix}`), `${p.name}: a test title starting '${prefix}' exists in ${files.join(', ')}`);
    checked++;
  }
  t.true(checked >= 2, `phases with --match: ${checked}`);
});

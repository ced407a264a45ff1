// The per-op profile of a model's native steps (EMAE_PROFILE=1; native/core/profiling_backend.h):
// the report's types, the checks of profile()'s options and the markdown tables the benchmarks print.
import { assertKnownKeys, assertObject, invalidTypeError } from './errors.js';
import type { NativeProfile } from './native.js';

/** One row of a {@link ProfileReport}: a native Backend op, at one shape where it has one. */
export interface ProfileRow {
  /** the Backend method, e.g. 'matmul_forward', 'matmul_backward_gelu', 'attention_backward', 'adamw' */
  op: string;
  /**
   * The GEMMs (matmul_*) `R×K×N` (rows × inputs × outputs), attention `S×T×H×dh` (sequences ×
   * tokens × heads × head width), LayerNorm `R×C`; absent for the ops recorded by name only.
   */
  shape?: string;
  /** calls measured */
  calls: number;
  /** their time, summed (ms) */
  totalMs: number;
  /** totalMs / calls */
  meanMs: number;
}

/**
 * What `profile()` returns when the model was created with `EMAE_PROFILE=1` in the environment:
 * every Backend op its native calls made since creation (or the last `reset`), with the calls'
 * count and time. A step is one native compute call (trainStep, lossAndGrads,
 * accumulateGradients, applyGradients, reconstruct, encode; for a Classifier trainStep,
 * lossAndGrads, predict); ops outside them (stateDict, loadWeights, the data-parallel
 * all-reduce, ...) are not recorded.
 *
 * Times: on the CPU a steady host clock around each (synchronous) op; on CUDA a pair of events on
 * the backend's stream around each op and each step, read when the report is asked for — device
 * time, so `gapMs` is the time the device waited between ops inside the steps: kernel launch
 * overhead and host work (a CUDA graph's gain is bounded by it). An op's time includes any gaps
 * between the kernels it launches itself; the profiler's two event records per op are host time
 * and can only add to the gaps (compare stepMs with an unprofiled run).
 */
export interface ProfileReport {
  enabled: true;
  /** 'host-clock' (CPU backend) or 'cuda-events' (CUDA backend) */
  timing: 'host-clock' | 'cuda-events';
  /** native compute calls measured */
  steps: number;
  /** their wall time, summed (ms; device time on CUDA) */
  stepMs: number;
  /** the time of their ops, summed (ms) */
  opsMs: number;
  /** stepMs − opsMs: time inside the steps when no op ran */
  gapMs: number;
  /** by totalMs, largest first */
  rows: ProfileRow[];
}

/** What `profile()` returns when the model was created without EMAE_PROFILE=1. */
export interface ProfileDisabled {
  enabled: false;
  /** how to turn it on */
  reason: string;
}

export interface ProfileOptions {
  /** start counting again from zero after this report (default false) */
  reset?: boolean;
}

export const PROFILE_DISABLED_REASON =
  'profiling is off: set EMAE_PROFILE=1 in the environment before the model is created';

/** Validates profile()'s options; the native call's argument. */
export function checkProfileOptions(options: unknown): { reset: boolean } {
  assertObject('options', options, 'object with reset');
  assertKnownKeys('profile option', options, ['reset']);
  const reset = options.reset ?? false;
  if (typeof reset !== 'boolean') throw invalidTypeError('reset', 'boolean', reset);
  return { reset };
}

/** The native report (null: not profiled) as the public one. */
export function toProfileReport(raw: NativeProfile | null): ProfileReport | ProfileDisabled {
  if (raw === null) return { enabled: false, reason: PROFILE_DISABLED_REASON };
  const rows = raw.rows.map((r): ProfileRow => ({
    op: r.op, ...(r.shape ? { shape: r.shape } : {}), calls: r.calls, totalMs: r.totalMs, meanMs: r.totalMs / r.calls,
  }));
  return {
    enabled: true, timing: raw.timing, steps: raw.steps, stepMs: raw.stepMs, opsMs: raw.opsMs,
    gapMs: raw.stepMs - raw.opsMs, rows,
  };
}

/** The report's rows summed over shapes: one row per op, by totalMs, largest first. */
export function profileByOp(report: ProfileReport): ProfileRow[] {
  const byOp = new Map<string, ProfileRow>();
  for (const r of report.rows) {
    const row = byOp.get(r.op) ?? { op: r.op, calls: 0, totalMs: 0, meanMs: 0 };
    row.calls += r.calls;
    row.totalMs += r.totalMs;
    byOp.set(r.op, row);
  }
  const rows = [...byOp.values()];
  for (const r of rows) r.meanMs = r.totalMs / r.calls;
  return rows.sort((a, b) => b.totalMs - a.totalMs);
}

/**
 * The report as markdown: a line with the steps, the step time against the ops' time and the gap,
 * then the `top` rows by op and the `top` rows by op and shape, each with calls per step, time per
 * step and share of the step.
 */
export function formatProfile(report: ProfileReport, options: { top?: number } = {}): string {
  const top = options.top ?? 15;
  const steps = Math.max(1, report.steps);
  const pct = (ms: number) => (report.stepMs > 0 ? `${((100 * ms) / report.stepMs).toFixed(1)}%` : 'n/a');
  const calls = report.rows.reduce((n, r) => n + r.calls, 0);
  const table = (title: string, rows: ProfileRow[], withShape: boolean) => [
    `| ${title} |${withShape ? ' shape |' : ''} calls/step | ms/step | mean ms | % of step |`,
    `|---|${withShape ? '---|' : ''}---|---|---|---|`,
    ...rows.slice(0, top).map((r) => `| ${r.op} |${withShape ? ` ${r.shape ?? ''} |` : ''} ${(r.calls / steps).toFixed(1)} | ` +
      `${(r.totalMs / steps).toFixed(3)} | ${r.meanMs.toFixed(4)} | ${pct(r.totalMs)} |`),
  ].join('\n');
  return [
    `steps ${report.steps} (${report.timing}): step ${(report.stepMs / steps).toFixed(3)} ms, ops ${(report.opsMs / steps).toFixed(3)} ms, ` +
      `gaps ${(report.gapMs / steps).toFixed(3)} ms (${pct(report.gapMs)} of the step), ${(calls / steps).toFixed(0)} op calls per step`,
    '',
    table('op', profileByOp(report), false),
    '',
    table('op', report.rows, true),
  ].join('\n');
}

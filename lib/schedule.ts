// MAE's learning-rate recipe (main_pretrain.py / util/lr_sched.py): lr = blr · effectiveBatch / 256,
// linear warm-up, then a half-cycle cosine down to minLr, set per iteration.
import { invalidRangeError } from './errors.js';

export interface LrSchedule {
  /** peak learning rate (after warm-up) */
  baseLr: number;
  /** iterations of linear warm-up */
  warmupSteps: number;
  /** total iterations of the run */
  totalSteps: number;
  /** the floor of the cosine (default 0) */
  minLr?: number;
}

/** MAE's absolute learning rate from the base rate: blr · effectiveBatch / 256. */
export function scaledLr(blr: number, effectiveBatch: number): number {
  return (blr * effectiveBatch) / 256;
}

/** The learning rate of iteration `step` (0-based). */
export function lrAt(step: number, s: LrSchedule): number {
  const minLr = s.minLr ?? 0;
  if (!(s.baseLr >= 0) || !(minLr >= 0)) throw invalidRangeError('baseLr/minLr', 'non-negative numbers', s.baseLr);
  if (!Number.isInteger(s.warmupSteps) || s.warmupSteps < 0) throw invalidRangeError('warmupSteps', 'integer >= 0', s.warmupSteps);
  if (!Number.isInteger(s.totalSteps) || s.totalSteps < 1) throw invalidRangeError('totalSteps', 'integer >= 1', s.totalSteps);
  if (step < s.warmupSteps) return (s.baseLr * step) / s.warmupSteps;  // MAE: lr · epoch / warmup_epochs, from 0
  const span = Math.max(1, s.totalSteps - s.warmupSteps);
  const t = Math.min(1, (step - s.warmupSteps) / span);
  return minLr + (s.baseLr - minLr) * 0.5 * (1 + Math.cos(Math.PI * t));
}

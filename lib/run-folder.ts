// A training run's output folder: log.jsonl, ckpt-<step>.safetensors, curves.svg/png. One run per
// folder, so nothing a run does (pruning, appending to the log, resuming) can reach another run's
// files: a fresh run refuses a folder that already holds files unless told to start over, and
// pruning removes only checkpoints that carry the current run's id. The Trainer and the FineTuner
// both keep their folders through this module (prepareRunFolder, newestRunCheckpoint,
// pruneRunCheckpoints); "this run" is the run id each records in its checkpoints.
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { listCheckpoints } from './checkpoint.js';
import { readSafetensorsMetadata, writeFileAtomic } from './safetensors.js';

/** The log a run appends one JSON line per step (and the fine-tuner per epoch) to. */
export const LOG_FILE = 'log.jsonl';

/** The files a run writes (and the temporary files of interrupted atomic writes). */
const RUN_FILE = /^(ckpt-\d+\.safetensors|log\.jsonl|curves\.(svg|png))(\.tmp-.*)?$/;
const TEMPORARY = /\.tmp-\d+-[0-9a-f]+$/;

/** Error code of a refused output folder. */
export const OUT_NOT_EMPTY = 'EMAE_OUT_NOT_EMPTY';

/** What preparing the output folder did (prepareRunFolder, Trainer.prepareOutDir). */
export interface OutDirReport {
  /** run files deleted: an earlier run's because `overwrite` was set, or interrupted writes of the run continued */
  removed: string[];
  /** log.jsonl lines after the resumed step, dropped so that no step is logged twice */
  logLinesDropped: number;
}

/** The run a folder is prepared for. */
export interface RunStart {
  /** start over in a folder that holds files, deleting the run files there */
  overwrite: boolean;
  /** the checkpoint the run was resumed from (none for a new run) */
  resumedFrom?: string;
  /** the step the run starts at (a resumed run's checkpoint step) */
  step: number;
}

async function entries(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw outDirError(dir, err as NodeJS.ErrnoException);
  }
}

/** A sentence for an output folder that cannot be used (instead of a bare EEXIST/ENOTDIR/EACCES). */
export function outDirError(dir: string, err: NodeJS.ErrnoException): Error {
  const why: Record<string, string> = {
    EEXIST: 'a file of that name exists and is not a folder',
    ENOTDIR: 'a file of that name (or above it) is not a folder',
    EACCES: 'permission denied',
    EPERM: 'permission denied',
    EROFS: 'the file system is read-only',
    ENOSPC: 'no space left on the device',
  };
  const reason = why[err.code ?? ''] ?? err.message;
  return Object.assign(new Error(`cannot use ${dir} as the output folder: ${reason}`), { code: err.code, cause: err });
}

/**
 * Checks that a run can start in `dir`: the folder is missing or empty, or `overwrite` is set, in
 * which case the run files found there are deleted (other files are left alone). Returns the names
 * it deleted. Throws (code EMAE_OUT_NOT_EMPTY) naming what is there and how to go on otherwise.
 */
async function claimOutDir(dir: string, overwrite: boolean): Promise<string[]> {
  let info;
  try {
    info = await stat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw outDirError(dir, err as NodeJS.ErrnoException);
  }
  if (info && !info.isDirectory()) throw outDirError(dir, Object.assign(new Error('not a directory'), { code: 'EEXIST' }));
  const names = await entries(dir);
  if (names.length === 0) return [];
  if (!overwrite) {
    const shown = names.slice(0, 4).join(', ') + (names.length > 4 ? `, … (${names.length} entries)` : '');
    throw Object.assign(new Error(`the output folder ${dir} is not empty (${shown}): resume that run (--resume / ` +
      'trainer.resume()), choose another folder, or start over with --force (overwrite: true), which deletes its ' +
      'checkpoints, log.jsonl and curves'), { code: OUT_NOT_EMPTY });
  }
  const removed = names.filter((n) => RUN_FILE.test(n));
  for (const n of removed) await rm(path.join(dir, n), { force: true });
  return removed;
}

/**
 * Makes `dir` ready for a run. A new run, or one resumed from a checkpoint in another folder,
 * claims it (claimOutDir: missing or empty, or `overwrite`; else code EMAE_OUT_NOT_EMPTY with
 * nothing deleted). A run resumed from a checkpoint in `dir` continues there: interrupted writes
 * are removed and log.jsonl is cut back to the resumed step. Then the folder is created.
 */
export async function prepareRunFolder(dir: string, run: RunStart): Promise<OutDirReport> {
  const report: OutDirReport = { removed: [], logLinesDropped: 0 };
  const continuing = run.resumedFrom !== undefined && path.resolve(path.dirname(run.resumedFrom)) === path.resolve(dir);
  if (continuing) {
    report.removed = await removeStaleTemporaries(dir);
    report.logLinesDropped = await truncateLog(path.join(dir, LOG_FILE), run.step);
  } else {
    report.removed = await claimOutDir(dir, run.overwrite);
  }
  try {
    await mkdir(dir, { recursive: true });
  } catch (err) {
    throw outDirError(dir, err as NodeJS.ErrnoException);
  }
  return report;
}

/** Removes temporary files left by atomic writes that were interrupted (a killed process). */
async function removeStaleTemporaries(dir: string): Promise<string[]> {
  const stale = (await entries(dir)).filter((n) => RUN_FILE.test(n) && TEMPORARY.test(n));
  for (const n of stale) await rm(path.join(dir, n), { force: true });
  return stale;
}

/**
 * Cuts `log.jsonl` back to the steps up to `step` (the step a run resumes from), so that steps
 * logged after the last checkpoint of an interrupted run are not repeated. Returns the lines dropped.
 */
async function truncateLog(file: string, step: number): Promise<number> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  const lines = text.split('\n').filter((l) => l.length > 0);
  const kept = lines.filter((l) => {
    try {
      return (JSON.parse(l) as { step?: unknown }).step as number <= step;
    } catch {
      return false;  // a line cut short by a crash
    }
  });
  if (kept.length === lines.length) return 0;
  await writeFileAtomic(file, new TextEncoder().encode(kept.map((l) => l + '\n').join('')));
  return lines.length - kept.length;
}

/** The run id a checkpoint was written with (undefined for files of older versions or not checkpoints). */
async function checkpointRunId(file: string): Promise<string | undefined> {
  try {
    const trainer = JSON.parse((await readSafetensorsMetadata(file)).trainer ?? '{}') as { runId?: unknown };
    return typeof trainer.runId === 'string' ? trainer.runId : undefined;
  } catch {
    return undefined;
  }
}

/** The newest checkpoint of run `runId` in `dir` (the one a resume of it would take), if any. */
export async function newestRunCheckpoint(dir: string, runId: string): Promise<string | undefined> {
  const all = await listCheckpoints(dir);
  // newest first: usually the last file is this run's, so one header is read
  for (let i = all.length - 1; i >= 0; i--) if ((await checkpointRunId(all[i])) === runId) return all[i];
  return undefined;
}

/** Removes all but the newest `keep` checkpoints of run `runId` in `dir`; other runs' files stay. */
export async function pruneRunCheckpoints(dir: string, keep: number, runId: string): Promise<string[]> {
  const ours: string[] = [];
  for (const file of await listCheckpoints(dir)) if ((await checkpointRunId(file)) === runId) ours.push(file);
  const removed = ours.slice(0, Math.max(0, ours.length - keep));
  for (const file of removed) await rm(file, { force: true });
  return removed;
}

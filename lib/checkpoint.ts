// Training checkpoints: weights (MAE names), AdamW moments and step, and the trainer's state, in
// one safetensors file written atomically (temporary file, then rename) with the model config and
// a SHA-256 of every tensor in the metadata (lib/weights-file.ts). Loading verifies the format and
// the checksum before anything is written into the model, so a truncated or corrupted file is
// refused, never half-loaded.
import { readFile, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { resolveConfig } from './config.js';
import { assertObject, invalidTypeError } from './errors.js';
import type { EMAE } from './model.js';
import { writeFileAtomic, writeSafetensors, type SafetensorsInput } from './safetensors.js';
import { CHECKPOINT_FORMAT, CHECKSUM_KEY, CONFIG_KEY, architectureDifference, configMetadata, parseWeightsFile } from './weights-file.js';

export { CHECKPOINT_FORMAT };

/** Metadata keys saveCheckpoint writes itself. */
const RESERVED_KEYS = ['format', 'optimizer_step', 'trainer', CONFIG_KEY, CHECKSUM_KEY];

/**
 * Writes model weights, optimizer state, the model config and `trainer` (JSON-serializable) to
 * `file`, atomically. `metadata` adds string entries to the file's metadata (e.g. the trainer's
 * options as JSON under `trainer_options`); readWeightsInfo(file).metadata returns them.
 * @throws {TypeError} metadata that is not an object of strings
 * @throws {RangeError} a metadata key saveCheckpoint writes itself (format, optimizer_step,
 *   trainer, emae_config, sha256)
 */
export async function saveCheckpoint(file: string, model: EMAE, trainer: Record<string, unknown>,
  metadata: Record<string, string> = {}): Promise<void> {
  assertObject('metadata', metadata, 'object of strings');
  for (const [k, v] of Object.entries(metadata)) {
    if (RESERVED_KEYS.includes(k)) throw new RangeError(`metadata key ${k} is written by saveCheckpoint itself; use another name`);
    if (typeof v !== 'string') throw invalidTypeError(`metadata.${k}`, 'string', v);
  }
  const params = await model.stateDict();
  const optimizer = await model.getOptimizerState();
  const tensors: Record<string, { data: Float32Array; shape: readonly number[] }> = {};
  for (const p of model.paramInfo()) {
    tensors[`param.${p.name}`] = { data: params[p.name], shape: p.shape };
    if (p.trainable) {
      tensors[`exp_avg.${p.name}`] = { data: optimizer.expAvg[p.name], shape: p.shape };
      tensors[`exp_avg_sq.${p.name}`] = { data: optimizer.expAvgSq[p.name], shape: p.shape };
    }
  }
  const all = {
    ...metadata,
    format: CHECKPOINT_FORMAT,
    optimizer_step: String(optimizer.step),
    trainer: JSON.stringify(trainer),
    ...configMetadata(model.config, tensors),
  };
  await writeFileAtomic(file, writeSafetensors(tensors as Record<string, SafetensorsInput>, all));
}

/**
 * Verifies `file` and loads it into `model` (weights and optimizer state); returns the trainer
 * state saved with it. Throws before touching the model when the file is not an emae checkpoint,
 * is truncated, fails its checksum, or was saved for another architecture (the keys are named).
 * `accept`, when given, sees the trainer state after the file is verified and may throw to refuse
 * it: it runs before anything is written, so a refused checkpoint leaves the model as it was.
 */
export async function loadCheckpoint(file: string, model: EMAE,
  accept?: (trainer: Record<string, unknown>) => void): Promise<Record<string, unknown>> {
  const { kind, config, metadata, data: tensors } = parseWeightsFile(await readFile(file), file, 'checkpoint');
  if (kind !== 'checkpoint')
    throw new Error(`${file}: not an emae checkpoint (format '${metadata.format}', expected '${CHECKPOINT_FORMAT}')`);
  if (config !== undefined) {
    const diff = architectureDifference(resolveConfig(config), 'the file', model.config, 'this model');
    if (diff) throw new RangeError(`${file}: the checkpoint was saved for another model: ${diff}`);
  }
  const f32: Record<string, { data: Float32Array }> = {};
  for (const [name, t] of Object.entries(tensors)) {
    if (t.dtype !== 'F32') throw new Error(`${file}: tensor ${name} is ${t.dtype}, expected F32`);
    f32[name] = { data: t.data as Float32Array };
  }
  const step = Number(metadata.optimizer_step);
  let trainer: Record<string, unknown>;
  try {
    trainer = JSON.parse(metadata.trainer ?? '');
  } catch {
    throw new Error(`${file}: the trainer state is not valid JSON`);
  }
  const params: Record<string, Float32Array> = {}, expAvg: Record<string, Float32Array> = {}, expAvgSq: Record<string, Float32Array> = {};
  for (const [name, t] of Object.entries(f32)) {
    if (name.startsWith('param.')) params[name.slice(6)] = t.data;
    else if (name.startsWith('exp_avg_sq.')) expAvgSq[name.slice(11)] = t.data;
    else if (name.startsWith('exp_avg.')) expAvg[name.slice(8)] = t.data;
  }
  accept?.(trainer);
  // loadStateDict checks every name and shape before writing; the optimizer state likewise
  const before = await model.stateDict();
  await model.loadStateDict(params);
  try {
    await model.setOptimizerState({ step, expAvg, expAvgSq });
  } catch (err) {
    await model.loadStateDict(before);  // keep the model as it was
    throw err;
  }
  return trainer;
}

/** Checkpoint files `ckpt-<step>.safetensors` in `dir`, oldest first. */
export async function listCheckpoints(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  return names
    .map((n) => /^ckpt-(\d+)\.safetensors$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .sort((a, b) => Number(a[1]) - Number(b[1]))
    .map((m) => path.join(dir, m[0]));
}

/** Removes all but the newest `keep` checkpoints in `dir`. */
export async function pruneCheckpoints(dir: string, keep: number): Promise<void> {
  const all = await listCheckpoints(dir);
  for (const file of all.slice(0, Math.max(0, all.length - keep))) await rm(file, { force: true });
}

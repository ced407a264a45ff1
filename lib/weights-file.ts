// What an emae safetensors file says about itself. saveWeights and saveCheckpoint record, in the
// string-to-string metadata the format allows:
//   emae_config  JSON of the user-level config keys (SAVED_CONFIG_KEYS) the tensors belong to,
//                so the file alone rebuilds its model (EMAE.create(info.config))
//   sha256       SHA-256 over every tensor (name, then bytes, by sorted name) and emae_config, so
//                a flipped bit or a truncation reads as corruption, not as tensors that do not fit
// Checkpoints also have format 'emae-checkpoint/1' (lib/checkpoint.ts); weights keep format 'pt',
// which PyTorch's safetensors.torch.load_file requires. Files written elsewhere have neither key
// and load unchecked, as before.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { resolveConfig, type EMAEConfig, type ResolvedConfig } from './config.js';
import { assertString } from './errors.js';
import { readSafetensors, readSafetensorsMetadata, type SafetensorsDType, type SafetensorsTensor } from './safetensors.js';

export const CHECKPOINT_FORMAT = 'emae-checkpoint/1';
export const CONFIG_KEY = 'emae_config';
export const CHECKSUM_KEY = 'sha256';
/** a fine-tuning classifier's config (lib/classifier.ts), covered by the checksum like emae_config */
export const CLASSIFIER_CONFIG_KEY = 'emae_classifier_config';

/**
 * The config keys a file records: the network and its training objective. Not device, threads,
 * cpuMatmul (where and how fast it runs) nor seed (the initialization the tensors replace).
 */
export const SAVED_CONFIG_KEYS = ['imageSize', 'patchSize', 'channels', 'embedDim', 'depth', 'numHeads',
  'decoderEmbedDim', 'decoderDepth', 'decoderNumHeads', 'mlpRatio', 'maskRatio', 'parts', 'normPixLoss',
  'consistencyWeight', 'consistencyDistance', 'layerNormEps'] as const;

/**
 * Keys that must agree for the tensors to compute the same function: the shapes, and numHeads
 * and layerNormEps, which change the function without changing a shape. The others (mask ratio,
 * parts, loss) are training choices; weights trained one way may be evaluated another.
 */
export const ARCHITECTURE_KEYS = ['imageSize', 'patchSize', 'channels', 'embedDim', 'depth', 'numHeads',
  'decoderEmbedDim', 'decoderDepth', 'decoderNumHeads', 'mlpRatio', 'layerNormEps'] as const;

export interface WeightsFileInfo {
  /** 'checkpoint' (saveCheckpoint: weights as param.<name>, AdamW moments, trainer state) or 'weights' */
  kind: 'checkpoint' | 'weights';
  /** the config saved with the tensors (SAVED_CONFIG_KEYS); undefined for files from elsewhere */
  config?: EMAEConfig;
  /** the file has a checksum and it matched (a mismatch throws) */
  verified: boolean;
  /** the file's metadata as stored (all strings) */
  metadata: Record<string, string>;
  tensors: Record<string, { dtype: SafetensorsDType; shape: number[] }>;
}

/** SHA-256 over tensors by sorted name (name, then data bytes) and then, when given, the saved config. */
export function weightsChecksum(tensors: Record<string, { data: ArrayBufferView }>, config?: string): string {
  const hash = createHash('sha256');
  for (const name of Object.keys(tensors).sort()) {
    const d = tensors[name].data;
    hash.update(name);
    hash.update(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  }
  // the config decides which model the tensors are read into; checkpoints from before it was
  // recorded have none and keep their checksum
  if (config !== undefined) {
    hash.update(CONFIG_KEY);
    hash.update(config);
  }
  return hash.digest('hex');
}

/** The metadata that records `config` and the checksum of `tensors` with it. */
export function configMetadata(config: Readonly<ResolvedConfig>, tensors: Record<string, { data: ArrayBufferView }>): Record<string, string> {
  const saved = JSON.stringify(Object.fromEntries(SAVED_CONFIG_KEYS.map((k) => [k, config[k]])));
  return { [CONFIG_KEY]: saved, [CHECKSUM_KEY]: weightsChecksum(tensors, saved) };
}

/**
 * The architecture keys on which two resolved configs differ, as "depth 2 in <aName>, 1 in
 * <bName>; …", or undefined when they agree.
 */
export function architectureDifference(a: Readonly<ResolvedConfig>, aName: string, b: Readonly<ResolvedConfig>, bName: string): string | undefined {
  const diffs = ARCHITECTURE_KEYS.filter((k) => a[k] !== b[k]).map((k) => `${k} ${a[k]} in ${aName}, ${b[k]} in ${bName}`);
  return diffs.length > 0 ? diffs.join('; ') : undefined;
}

/**
 * Parses and verifies an emae or PyTorch safetensors file: the format, the checksum when there is
 * one (always for checkpoints), then the saved config. `noun` names the file in errors.
 * @throws {RangeError} unreadable bytes, a checksum mismatch (the message says 'corrupt'), a
 *   saved config that is not a valid config
 */
export function parseWeightsFile(bytes: Uint8Array, file: string, noun = 'safetensors file'):
  WeightsFileInfo & { data: Record<string, SafetensorsTensor> } {
  let parsed;
  try {
    parsed = readSafetensors(bytes);
  } catch (err) {
    const msg = (err as Error).message;
    // a well-formed file in a dtype emae does not read (BF16 from PyTorch) is not corrupt
    if (/which emae does not read/.test(msg)) throw new RangeError(`${file}: ${msg}`);
    throw new RangeError(`${file}: not a readable ${noun}, the file is corrupt or truncated (${msg})`);
  }
  const { tensors, metadata } = parsed;
  const kind = metadata.format === CHECKPOINT_FORMAT ? 'checkpoint' : 'weights';
  const savedConfig = metadata[CONFIG_KEY];
  const sum = metadata[CHECKSUM_KEY];
  if (sum !== undefined || kind === 'checkpoint') {
    if (weightsChecksum(tensors, savedConfig ?? metadata[CLASSIFIER_CONFIG_KEY]) !== sum) {
      throw new RangeError(`${file}: checksum mismatch, the ${noun} is corrupted (its tensors or saved config changed after it was written)`);
    }
  }
  const config = parseSavedConfig(savedConfig, file);
  const shapes = Object.fromEntries(Object.entries(tensors).map(([name, t]) => [name, { dtype: t.dtype, shape: t.shape }]));
  return { kind, ...(config !== undefined ? { config } : {}), verified: sum !== undefined, metadata, tensors: shapes, data: tensors };
}

function parseSavedConfig(saved: string | undefined, file: string): EMAEConfig | undefined {
  if (saved === undefined) return undefined;
  try {
    const config = JSON.parse(saved) as EMAEConfig;
    resolveConfig(config);
    return config;
  } catch (err) {
    throw new RangeError(`${file}: the model config saved in it (metadata ${CONFIG_KEY}) is not valid: ${(err as Error).message}`);
  }
}

/**
 * The model config a file was saved with (undefined for files from elsewhere), from its header
 * alone: nothing is verified here, so follow with loadWeights or loadCheckpoint, which check the
 * checksum (it covers the config too) before anything is loaded.
 * @throws {RangeError} a header that does not parse (corrupt or truncated), an invalid saved config
 */
export async function readSavedConfig(file: string): Promise<EMAEConfig | undefined> {
  let metadata: Record<string, string>;
  try {
    metadata = await readSafetensorsMetadata(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== undefined) throw err;  // ENOENT and the like, as they are
    throw new RangeError(`${file}: not a readable safetensors file, the file is corrupt or truncated (${(err as Error).message})`);
  }
  return parseSavedConfig(metadata[CONFIG_KEY], file);
}

/**
 * Reads `file` in full and says what it is: weights or a checkpoint, the config it was saved with
 * (EMAE.create(info.config) builds a model it loads into), the tensors' names and shapes.
 * Verifies the checksum when the file has one.
 * @throws {TypeError} file is not a string
 * @throws {RangeError} a corrupted or truncated file, an invalid saved config
 * @throws {Error} the file cannot be read (code ENOENT, …)
 */
export async function readWeightsInfo(file: string): Promise<WeightsFileInfo> {
  assertString('file', file, 'path string');
  const { data: _, ...info } = parseWeightsFile(await readFile(file), file);
  return info;
}

// The model configuration: the keys of DESIGN §3, validated with zod and resolved into the
// derived sizes of DESIGN §1 (N, P, K_total, V). Every error names the key and what was
// expected: TypeError for a wrong type or an unknown key, RangeError for a bad value.
import { z } from 'zod';
import { describeValue, invalidRangeError, invalidTypeError, isObject, unknownKeyMessage } from './errors.js';
import { isPresetName, presetNames, presets, type PresetName } from './presets.js';

/** Precision of the CPU backend's matmuls. */
export type CpuMatmul = 'fp32' | 'bf16';
export type ConsistencyDistance = 'mse' | 'l1';
export type DeviceRequest = 'auto' | 'cpu' | 'cuda';

/** Model configuration as users write it (camelCase, DESIGN §3). */
export interface EMAEConfig {
  /** Start from a preset; keys given beside it override the preset's. */
  preset?: PresetName;
  /** Image height = width, in pixels. */
  imageSize?: number;
  /** Patch size p; must divide imageSize. */
  patchSize?: number;
  /** Image channels C (default 3). */
  channels?: number;
  /** Encoder width D (divisible by numHeads and by 4). */
  embedDim?: number;
  /** Encoder blocks. */
  depth?: number;
  numHeads?: number;
  /** Decoder width Dd (divisible by decoderNumHeads and by 4). */
  decoderEmbedDim?: number;
  decoderDepth?: number;
  decoderNumHeads?: number;
  /** MLP hidden size = mlpRatio·width (default 4); must be an integer for both widths. */
  mlpRatio?: number;
  /** Mask ratio r in (0, 1) (default 0.75); K_total = round(1/(1−r)) parts. */
  maskRatio?: number;
  /** Parts K used per iteration, 1..K_total (default K_total; 1 = plain MAE). */
  parts?: number;
  /** Normalize each target patch by its mean and unbiased variance (default true). */
  normPixLoss?: boolean;
  /** λ of the self-consistency loss (default 1). */
  consistencyWeight?: number;
  /** Distance of the self-consistency loss (default 'mse'). */
  consistencyDistance?: ConsistencyDistance;
  /** LayerNorm epsilon (default 1e-6). */
  layerNormEps?: number;
  /** Where to run (default 'auto'). */
  device?: DeviceRequest;
  /** Seed of the parameter initialization, uint32 (default 0). */
  seed?: number;
  /** CPU threads (default: the addon's default, OpenMP's). */
  threads?: number;
  /**
   * Precision of the CPU backend's matmuls (default 'fp32'). 'bf16' (opt-in) rounds the GEMM
   * operands to bf16 and multiplies them with fp32 sums, on Intel AMX tiles (Sapphire Rapids and
   * newer) or else with AVX512-BF16 (AMD Zen 4 and newer, Intel Cooper Lake); `cpuInfo()` says
   * whether this machine can and on which; weights, activations and AdamW stay fp32.
   * The CUDA backend always multiplies in bf16 with fp32 sums.
   */
  cpuMatmul?: CpuMatmul;
}

/** A validated configuration with every default filled in and the derived sizes. */
export interface ResolvedConfig {
  imageSize: number;
  patchSize: number;
  channels: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  decoderEmbedDim: number;
  decoderDepth: number;
  decoderNumHeads: number;
  mlpRatio: number;
  maskRatio: number;
  parts: number;
  normPixLoss: boolean;
  consistencyWeight: number;
  consistencyDistance: ConsistencyDistance;
  layerNormEps: number;
  device: DeviceRequest;
  seed: number;
  threads?: number;
  cpuMatmul: CpuMatmul;
  /** N = (imageSize/patchSize)² */
  numPatches: number;
  /** P = patchSize²·channels */
  patchDim: number;
  /** K_total = round(1/(1−maskRatio)) */
  partsTotal: number;
  /** V = N / K_total */
  visiblePerPart: number;
}

// ---- per-key schema ---------------------------------------------------------------------------

interface KeySpec {
  schema: z.ZodType;
  /** the words after "Expected" in the error */
  expected: string;
  /** the `typeof` a value of the right type has: a different one gives a TypeError */
  jsType: 'number' | 'boolean' | 'string';
  /** default, when the key has one (parts' default is derived) */
  default?: unknown;
}

const positiveInt = (): KeySpec => ({ schema: z.int().positive(), expected: 'positive integer', jsType: 'number' });

const KEYS = {
  imageSize: positiveInt(),
  patchSize: positiveInt(),
  channels: { ...positiveInt(), default: 3 },
  embedDim: positiveInt(),
  depth: positiveInt(),
  numHeads: positiveInt(),
  decoderEmbedDim: positiveInt(),
  decoderDepth: positiveInt(),
  decoderNumHeads: positiveInt(),
  mlpRatio: { schema: z.number().positive(), expected: 'finite number > 0', jsType: 'number', default: 4 },
  maskRatio: { schema: z.number().gt(0).lt(1), expected: 'number in the open interval (0, 1)', jsType: 'number', default: 0.75 },
  parts: positiveInt(),
  normPixLoss: { schema: z.boolean(), expected: 'boolean', jsType: 'boolean', default: true },
  consistencyWeight: { schema: z.number().min(0), expected: 'finite number >= 0', jsType: 'number', default: 1 },
  consistencyDistance: { schema: z.enum(['mse', 'l1']), expected: "'mse' or 'l1'", jsType: 'string', default: 'mse' },
  layerNormEps: { schema: z.number().positive(), expected: 'finite number > 0', jsType: 'number', default: 1e-6 },
  device: { schema: z.enum(['auto', 'cpu', 'cuda']), expected: "'auto', 'cpu' or 'cuda'", jsType: 'string', default: 'auto' },
  seed: { schema: z.int().min(0).max(0xffffffff), expected: 'integer in 0..4294967295 (uint32)', jsType: 'number', default: 0 },
  threads: positiveInt(),
  cpuMatmul: { schema: z.enum(['fp32', 'bf16']), expected: "'fp32' or 'bf16'", jsType: 'string', default: 'fp32' },
} satisfies Record<Exclude<keyof EMAEConfig, 'preset'>, KeySpec>;

type ModelKey = keyof typeof KEYS;
const MODEL_KEYS = Object.keys(KEYS) as ModelKey[];
const PRESET_SPEC: KeySpec = {
  schema: z.enum(presetNames),
  expected: `one of ${presetNames.map((n) => `'${n}'`).join(', ')}`,
  jsType: 'string',
};
export const configKeys: readonly string[] = ['preset', ...MODEL_KEYS];

/** Keys a config must end up with (given, or from the preset). */
const REQUIRED: readonly ModelKey[] = ['imageSize', 'patchSize', 'embedDim', 'depth', 'numHeads',
  'decoderEmbedDim', 'decoderDepth', 'decoderNumHeads'];

/** The zod schema of a config as written: strict (unknown keys rejected), every key optional. */
export const configSchema = z.strictObject({
  preset: PRESET_SPEC.schema.optional(),
  ...Object.fromEntries(MODEL_KEYS.map((k) => [k, KEYS[k].schema.optional()])),
});

function specOf(key: string): KeySpec | undefined {
  return key === 'preset' ? PRESET_SPEC : (KEYS as Record<string, KeySpec>)[key];
}

/** Turns the first zod issue into the one error shape of the package. */
function issueToError(issue: z.core.$ZodIssue, input: Record<string, unknown>): Error {
  if (issue.code === 'unrecognized_keys') {
    return new TypeError(unknownKeyMessage('config key', issue.keys[0], configKeys));
  }
  const key = String(issue.path[0] ?? 'config');
  const spec = specOf(key);
  const actual = input[key];
  if (!spec) return new TypeError(`Invalid config key ${key}: ${issue.message}`);
  return typeof actual === spec.jsType
    ? invalidRangeError(key, spec.expected, actual)
    : invalidTypeError(key, spec.expected, actual);
}

function isIntegral(x: number): boolean {
  return Math.abs(x - Math.round(x)) <= 1e-9 * Math.max(1, Math.abs(x));
}

/**
 * Validates a config and resolves it: the preset's keys under the explicit ones, defaults,
 * and the derived sizes N, P, K_total, V.
 * @throws {TypeError} unknown key, or a key of the wrong type, or a required key missing
 * @throws {RangeError} a bad value, or sizes that do not fit together (see DESIGN §1)
 */
export function resolveConfig(input: unknown): ResolvedConfig {
  if (!isObject(input)) throw invalidTypeError('config', 'object', input);
  const parsed = configSchema.safeParse(input);
  if (!parsed.success) throw issueToError(parsed.error.issues[0], input);

  // The preset first, then every key the caller gave a value (undefined counts as not given).
  const merged: Record<string, unknown> = {};
  const preset = input.preset;
  if (preset !== undefined) {
    if (!isPresetName(preset)) throw invalidRangeError('preset', PRESET_SPEC.expected, preset);
    Object.assign(merged, presets[preset]);
  }
  for (const key of MODEL_KEYS) {
    if (input[key] !== undefined) merged[key] = input[key];
  }
  for (const key of REQUIRED) {
    if (merged[key] === undefined) {
      throw new TypeError(`Expected ${KEYS[key].expected} for ${key} but received undefined ` +
        `(set it, or start from a preset: ${presetNames.join(', ')})`);
    }
  }
  for (const key of MODEL_KEYS) {
    const spec: KeySpec = KEYS[key];
    if (merged[key] === undefined && spec.default !== undefined) merged[key] = spec.default;
  }
  const c = merged as Omit<ResolvedConfig, 'numPatches' | 'patchDim' | 'partsTotal' | 'visiblePerPart' | 'parts'> & { parts?: number };

  if (c.imageSize % c.patchSize !== 0) {
    throw new RangeError(`Expected imageSize divisible by patchSize but received imageSize=${c.imageSize}, ` +
      `patchSize=${c.patchSize}`);
  }
  checkWidth('embedDim', c.embedDim, 'numHeads', c.numHeads);
  checkWidth('decoderEmbedDim', c.decoderEmbedDim, 'decoderNumHeads', c.decoderNumHeads);
  for (const [key, width] of [['embedDim', c.embedDim], ['decoderEmbedDim', c.decoderEmbedDim]] as const) {
    if (!isIntegral(c.mlpRatio * width)) {
      throw new RangeError(`Expected mlpRatio such that mlpRatio·${key} is an integer (the MLP hidden size) but ` +
        `received mlpRatio=${c.mlpRatio}, ${key}=${width} (mlpRatio·${key} = ${c.mlpRatio * width})`);
    }
  }

  const grid = c.imageSize / c.patchSize;
  const numPatches = grid * grid;
  const partsTotal = Math.round(1 / (1 - c.maskRatio));
  if (partsTotal < 2) {
    throw new RangeError(`Expected maskRatio >= 1/3 (K_total = round(1/(1-maskRatio)) >= 2, so that each part ` +
      `masks some patches) but received maskRatio=${describeValue(c.maskRatio)} (K_total=${partsTotal})`);
  }
  if (numPatches % partsTotal !== 0) {
    throw new RangeError(`Expected maskRatio whose K_total = round(1/(1-maskRatio)) divides the number of patches, ` +
      `but N=${numPatches} patches do not split into K_total=${partsTotal} parts ` +
      `(maskRatio=${c.maskRatio}, imageSize=${c.imageSize}, patchSize=${c.patchSize})`);
  }
  const parts = c.parts ?? partsTotal;
  if (parts > partsTotal) {
    throw invalidRangeError('parts', `integer in 1..K_total=${partsTotal} (maskRatio=${c.maskRatio})`, parts);
  }

  return {
    imageSize: c.imageSize,
    patchSize: c.patchSize,
    channels: c.channels,
    embedDim: c.embedDim,
    depth: c.depth,
    numHeads: c.numHeads,
    decoderEmbedDim: c.decoderEmbedDim,
    decoderDepth: c.decoderDepth,
    decoderNumHeads: c.decoderNumHeads,
    mlpRatio: c.mlpRatio,
    maskRatio: c.maskRatio,
    parts,
    normPixLoss: c.normPixLoss,
    consistencyWeight: c.consistencyWeight,
    consistencyDistance: c.consistencyDistance,
    layerNormEps: c.layerNormEps,
    device: c.device,
    seed: c.seed,
    ...(c.threads !== undefined ? { threads: c.threads } : {}),
    cpuMatmul: c.cpuMatmul,
    numPatches,
    patchDim: c.patchSize * c.patchSize * c.channels,
    partsTotal,
    visiblePerPart: numPatches / partsTotal,
  };
}

function checkWidth(widthKey: string, width: number, headsKey: string, heads: number): void {
  if (width % heads !== 0) {
    throw new RangeError(`Expected ${widthKey} divisible by ${headsKey} but received ${widthKey}=${width}, ` +
      `${headsKey}=${heads}`);
  }
  if (width % 4 !== 0) {
    // the 2-D sin-cos positional embedding splits the width in 4 (sin/cos × row/column)
    throw invalidRangeError(widthKey, 'multiple of 4 (2-D sin-cos positional embedding)', width);
  }
}

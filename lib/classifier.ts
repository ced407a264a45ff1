// The fine-tuning model handle (DESIGN §3b): MAE's models_vit.VisionTransformer over a native
// core (native/core/classifier.cc). As EMAE (lib/model.ts): every argument is validated here
// and the error says what was wrong; a rejected call changes nothing; calls run one at a time.
import { readFile } from 'node:fs/promises';
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';
import { CallQueue, checkOptimizerState, checkTensors, product } from './call-queue.js';
import { resolveConfig, type CpuMatmul, type DeviceRequest, type EMAEConfig } from './config.js';
import {
  assertFiniteNumber, assertKnownKeys, assertObject, assertPositiveInteger, assertString,
  invalidRangeError, invalidTypeError, isFloat32Array, isInt32Array, isObject, withCallerStack,
} from './errors.js';
import { pickDevice, type Device, type OptimizerState, type StateDictTensor } from './model.js';
import { native, type NativeClassifier, type NativeClassifierBatch, type NativeClassifierConfig } from './native.js';
import { checkMemoryPlanArgs, type ActivationType, type MemoryPlanOptions, type MemoryReport } from './memory.js';
import type { PresetName } from './presets.js';
import { checkProfileOptions, toProfileReport, type ProfileDisabled, type ProfileOptions, type ProfileReport } from './profile.js';
import { smoothOneHot } from './finetune-data.js';
import { seededRng } from './rng.js';
import { writeFileAtomic, writeSafetensors } from './safetensors.js';
import { CHECKSUM_KEY, CLASSIFIER_CONFIG_KEY, parseWeightsFile, weightsChecksum } from './weights-file.js';

/** Fine-tuning model configuration: the encoder keys of EMAEConfig (or a preset) and the head's. */
export interface ClassifierConfig {
  /** a pretraining preset: its encoder keys are used, its decoder keys ignored */
  preset?: PresetName;
  imageSize?: number;
  patchSize?: number;
  channels?: number;
  embedDim?: number;
  depth?: number;
  numHeads?: number;
  mlpRatio?: number;
  layerNormEps?: number;
  device?: DeviceRequest;
  /** seed of the initialization and of drop path (default 0) */
  seed?: number;
  threads?: number;
  cpuMatmul?: CpuMatmul;
  /** classes of the head (at least 2) */
  numClasses: number;
  /** mean of the patch tokens → fc_norm (default true, MAE's); false: norm → the cls token */
  globalPool?: boolean;
  /** stochastic depth of the last block, linear from 0 over the blocks (default 0.1, MAE's ViT-B) */
  dropPath?: number;
  /** label smoothing of the cross-entropy against integer labels (default 0.1) */
  labelSmoothing?: number;
}

export interface ResolvedClassifierConfig {
  imageSize: number; patchSize: number; channels: number; embedDim: number; depth: number; numHeads: number;
  mlpRatio: number; layerNormEps: number; seed: number; threads: number; cpuMatmul: CpuMatmul; device: Device;
  numClasses: number; globalPool: boolean; dropPath: number; labelSmoothing: number;
  /** N patches */
  numPatches: number;
}

/** The encoder keys a pretrained checkpoint must agree on with the classifier. */
export const ENCODER_KEYS = ['imageSize', 'patchSize', 'channels', 'embedDim', 'depth', 'numHeads', 'mlpRatio'] as const;
/**
 * The architecture keys on which a saved classifier config (the JSON of metadata
 * emae_classifier_config) differs from `config`, as "numHeads 4 in the file, 2 in this classifier;
 * …", or undefined when they agree. Keys missing from the saved config are not compared.
 * @throws {RangeError} the saved config is not valid JSON
 */
export function classifierConfigDifference(saved: string, config: Readonly<ResolvedClassifierConfig>, file: string): string | undefined {
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(saved) as Record<string, unknown>;
  } catch {
    throw new RangeError(`${file}: the classifier config saved in it (metadata ${CLASSIFIER_CONFIG_KEY}) is not valid JSON`);
  }
  const ours = config as unknown as Record<string, unknown>;
  const diffs = [...ENCODER_KEYS, 'layerNormEps', 'numClasses', 'globalPool']
    .filter((k) => cfg[k] !== undefined && cfg[k] !== ours[k])
    .map((k) => `${k} ${String(cfg[k])} in the file, ${String(ours[k])} in this classifier`);
  return diffs.length > 0 ? diffs.join('; ') : undefined;
}

const CLASSIFIER_KEYS = ['preset', ...ENCODER_KEYS, 'layerNormEps', 'device', 'seed', 'threads', 'cpuMatmul',
  'numClasses', 'globalPool', 'dropPath', 'labelSmoothing'] as const;
/** what saveWeights records (and loadWeights compares) */
const SAVED_KEYS = [...ENCODER_KEYS, 'layerNormEps', 'numClasses', 'globalPool', 'dropPath', 'labelSmoothing'] as const;
export { CLASSIFIER_CONFIG_KEY };

export interface ClassifierParamInfo {
  name: string;
  shape: number[];
  /** AdamW weight decay applies (MAE: not for 1-D tensors, biases, pos_embed, cls_token) */
  decay: boolean;
  /** MAE's layer id: 0 embeddings, i + 1 block i, depth + 1 the head and its norm */
  layer: number;
}

/** A labelled batch: integer labels (label smoothing applied) or soft targets (used as given). */
export interface ClassifierBatch {
  /** Float32Array [batchSize, channels, imageSize, imageSize] */
  images: Float32Array;
  /** Int32Array [batchSize] of class indices */
  labels?: Int32Array;
  /** Float32Array [batchSize, numClasses], rows of non-negative values summing to 1 */
  targets?: Float32Array;
  batchSize: number;
}

export interface FinetuneStepOptions {
  /** the head's learning rate (layer id depth + 1); layer l gets lr · layerDecay^(depth + 1 − l) */
  lr: number;
  /** default 0.05 */
  weightDecay?: number;
  /** default 0.75 (MAE's fine-tuning default) */
  layerDecay?: number;
  /** default 0.9 */
  beta1?: number;
  /** default 0.999 (MAE's fine-tuning) */
  beta2?: number;
  /** default 1e-8 */
  eps?: number;
  /** global gradient norm to clip to; 0 none (default 0) */
  clipGrad?: number;
}

const STEP_KEYS = ['lr', 'weightDecay', 'layerDecay', 'beta1', 'beta2', 'eps', 'clipGrad'] as const;
const constructToken = Symbol('Classifier.create');
const DISPOSED = 'Classifier has been disposed';

/** Resolves and validates a classifier config (without touching the native addon). */
export function resolveClassifierConfig(config: ClassifierConfig): Omit<ResolvedClassifierConfig, 'device' | 'threads'> & { device: DeviceRequest; threads?: number } {
  if (!isObject(config)) throw invalidTypeError('config', 'object with numClasses and the encoder keys (or a preset)', config);
  assertKnownKeys('classifier config key', config, CLASSIFIER_KEYS);
  const { numClasses, globalPool = true, dropPath = 0.1, labelSmoothing = 0.1, ...encoder } = config;
  if (typeof numClasses !== 'number') throw invalidTypeError('numClasses', 'integer >= 2', numClasses);
  if (!Number.isSafeInteger(numClasses) || numClasses < 2) throw invalidRangeError('numClasses', 'integer >= 2', numClasses);
  if (typeof globalPool !== 'boolean') throw invalidTypeError('globalPool', 'boolean', globalPool);
  assertFiniteNumber('dropPath', dropPath, { min: 0, below: 1 });
  assertFiniteNumber('labelSmoothing', labelSmoothing, { min: 0, below: 1 });
  // the encoder keys as pretraining validates them (decoder keys: the defaults, unused)
  const e = encoder as EMAEConfig;
  const decoder = e.preset === undefined && e.decoderEmbedDim === undefined
    ? { decoderEmbedDim: e.embedDim, decoderNumHeads: e.numHeads, decoderDepth: 1 } : {};
  const r = resolveConfig({ ...decoder, ...e });
  return {
    imageSize: r.imageSize, patchSize: r.patchSize, channels: r.channels, embedDim: r.embedDim, depth: r.depth,
    numHeads: r.numHeads, mlpRatio: r.mlpRatio, layerNormEps: r.layerNormEps, seed: r.seed, cpuMatmul: r.cpuMatmul,
    device: r.device, ...(r.threads !== undefined ? { threads: r.threads } : {}),
    numClasses, globalPool, dropPath, labelSmoothing, numPatches: r.numPatches,
  };
}

export class Classifier {
  #handle: NativeClassifier;
  #config: Readonly<ResolvedClassifierConfig>;
  #params: readonly ClassifierParamInfo[];
  /** the fresh head (head.*, fc_norm.*) loadPretrained puts back */
  #freshHead: Record<string, Float32Array>;
  /** optimizer steps taken (mirrors the native count; drop path is drawn from it) */
  #step = 0;
  readonly #queue = new CallQueue(() => this.#assertAlive());

  /** Use {@link Classifier.create}. */
  private constructor(token: symbol, handle: NativeClassifier, config: ResolvedClassifierConfig) {
    if (token !== constructToken) throw new TypeError('Use Classifier.create(config) to make a classifier');
    this.#handle = handle;
    this.#config = Object.freeze({ ...config });
    this.#params = Object.freeze(handle.paramInfo().map((p) => Object.freeze({
      name: p.name, shape: Object.freeze([...p.shape]) as number[], decay: p.decay, layer: p.layer,
    })));
    const init = handle.getParams();
    this.#freshHead = Object.fromEntries(Object.entries(init).filter(([n]) => /^(head|fc_norm)\./.test(n)));
  }

  /**
   * Validates the config, picks the device and allocates the classifier: MAE's pretraining
   * initialization for the encoder (so training from scratch starts where pretraining would),
   * a head of normal(0, 2e-5) weights and zero bias.
   * @throws {TypeError|RangeError} a bad config (the key is named)
   */
  static async create(config: ClassifierConfig): Promise<Classifier> {
    const context = new Error();
    const r = resolveClassifierConfig(config);
    const addon = native();
    const device = pickDevice(r.device, () => addon.cudaInfo());
    const threads = r.threads ?? addon.defaultThreads();
    if (device === 'cpu' && r.cpuMatmul === 'bf16') {
      const bf16 = addon.cpuBf16Available();
      if (!bf16.available) throw new Error(`cpuMatmul 'bf16' is not available on this machine: ${bf16.reason}; use 'fp32'`);
    }
    let handle: NativeClassifier;
    try {
      handle = await addon.createClassifier(toNativeConfig(r, device, threads));
    } catch (err) {
      throw withCallerStack(err, context);
    }
    return new Classifier(constructToken, handle, { ...r, device, threads });
  }

  /**
   * The backend memory a fine-tuning step at `batchSize` would hold for a classifier of `config`,
   * planned without creating one; as {@link EMAE.memoryPlan}.
   * @throws {TypeError|RangeError} a bad config, batchSize or option (named)
   */
  static memoryPlan(config: ClassifierConfig, batchSize: number, options: MemoryPlanOptions = {}): MemoryReport {
    const r = resolveClassifierConfig(config);
    const activations = checkMemoryPlanArgs(batchSize, options);
    return { ...native().classifierMemoryPlan(toNativeConfig(r, 'cpu', r.threads ?? 1), batchSize, activations) };
  }

  /**
   * The backend memory a fine-tuning step at `batchSize` holds on this classifier's backend, for
   * the activation type it was created with; as {@link EMAE.memory}.
   * @throws {TypeError|RangeError} batchSize not a positive integer
   */
  memory(batchSize: number): MemoryReport {
    this.#assertAlive();
    assertPositiveInteger('batchSize', batchSize);
    return { ...this.#handle.memory(batchSize) };
  }

  get config(): Readonly<ResolvedClassifierConfig> {
    return this.#config;
  }

  get device(): Device {
    return this.#config.device;
  }

  /**
   * The element type the backend stores its activations in: 'bf16' when created with
   * EMAE_ACTIVATIONS=bf16 (on the CPU, the slow reference of the GPU's bf16 storage), else 'fp32'.
   */
  get activations(): ActivationType {
    this.#assertAlive();
    return this.#handle.activations;
  }

  get disposed(): boolean {
    return this.#queue.closed;
  }

  /** Name, shape, weight decay and layer id of every parameter, in state-dict order (copies). */
  paramInfo(): ClassifierParamInfo[] {
    this.#assertAlive();
    return this.#params.map((p) => ({ ...p, shape: [...p.shape] }));
  }

  /**
   * Each parameter's learning-rate factor under layer decay (MAE's param_groups_lrd):
   * layerDecay^(depth + 1 − layer id).
   */
  layerLrScales(layerDecay: number): Record<string, number> {
    assertFiniteNumber('layerDecay', layerDecay, { above: 0, max: 1 });
    const top = this.#config.depth + 1;
    return Object.fromEntries(this.#params.map((p) => [p.name, layerDecay ** (top - p.layer)]));
  }

  /** Copies of every parameter by models_vit state-dict name. */
  async stateDict(): Promise<Record<string, Float32Array>> {
    const context = new Error();
    this.#assertAlive();
    return this.#queue.run(context, () => this.#handle.getParams());
  }

  /**
   * Replaces the parameters; every name and shape is checked first (all problems listed), and on
   * error nothing changes. `strict: false` leaves missing tensors as they are and ignores extras.
   */
  async loadStateDict(dict: Record<string, StateDictTensor>, options: { strict?: boolean } = {}): Promise<void> {
    const context = new Error();
    this.#assertAlive();
    const strict = checkStrict(options);
    assertObject('state dict', dict, 'object mapping parameter names to Float32Array');
    const tensors: Record<string, { data: unknown; shape?: readonly number[] }> = {};
    for (const [name, value] of Object.entries(dict))
      tensors[name] = isObject(value) && !isFloat32Array(value) ? { data: value.data, shape: value.shape } : { data: value };
    const checked = checkTensors(this.#params, tensors, strict, 'state dict');
    await this.#queue.run(context, () => this.#setParams(checked));
  }

  /**
   * Starts fine-tuning from a pretraining weights file or checkpoint (EMAE.saveWeights, a Trainer
   * checkpoint, or MAE's PyTorch weights as safetensors): the encoder is loaded — patch_embed,
   * cls_token, pos_embed, blocks, and norm when globalPool is false (MAE keeps it then) — the
   * decoder is dropped, the head (and fc_norm) is freshly initialized, the optimizer state is
   * cleared. A file that records its config must have this classifier's encoder architecture.
   * @throws {RangeError} a corrupt file, another architecture (the keys are named), a missing or
   *   mis-shaped encoder tensor
   */
  async loadPretrained(file: string): Promise<void> {
    const context = new Error();
    this.#assertAlive();
    assertString('file', file, 'path string');
    let checked: Record<string, Float32Array>;
    try {
      const { kind, config, data } = parseWeightsFile(await readFile(file), file);
      if (config !== undefined) {
        const saved = resolveConfig(config);
        const diffs = [...ENCODER_KEYS, 'layerNormEps' as const].filter((k) => saved[k] !== this.#config[k]).map((k) => `${k} ${saved[k]} in the file, ${this.#config[k]} in this classifier`);
        if (diffs.length > 0) throw new RangeError(`cannot load ${file}: its encoder differs from this classifier's: ${diffs.join('; ')}`);
      }
      let tensors = data;
      if (kind === 'checkpoint')
        tensors = Object.fromEntries(Object.entries(data).filter(([n]) => n.startsWith('param.')).map(([n, t]) => [n.slice(6), t]));
      const encoder = this.#params.filter((p) => !/^(head|fc_norm)\./.test(p.name));
      checked = { ...checkTensors(encoder, pick(tensors, encoder.map((p) => p.name)), true, file), ...this.#freshHead };
    } catch (err) {
      throw withCallerStack(err, context);
    }
    await this.#queue.run(context, () => {
      this.#setParams(checked);
      this.#handle.setOptimizerState(zeroState(this.#params));
      this.#step = 0;
    });
  }

  /**
   * Loads a whole classifier saved by saveWeights or a fine-tuning checkpoint (its parameters;
   * FineTuner.resume restores the optimizer too), or any safetensors with models_vit names.
   * A file that records its config must match this classifier's (the keys are named).
   */
  async loadWeights(file: string, options: { strict?: boolean } = {}): Promise<void> {
    const context = new Error();
    this.#assertAlive();
    assertString('file', file, 'path string');
    const strict = checkStrict(options);
    let checked: Record<string, Float32Array>;
    try {
      const bytes = await readFile(file);
      const { data, metadata } = parseWeightsFile(bytes, file, 'classifier weights file');
      const saved = metadata[CLASSIFIER_CONFIG_KEY];
      if (saved !== undefined && strict) {
        const diff = classifierConfigDifference(saved, this.#config, file);
        if (diff) throw new RangeError(`cannot load ${file}: it was saved for another classifier: ${diff}`);
      }
      // a fine-tuning checkpoint holds the parameters as param.<name> beside the AdamW moments
      const tensors = metadata.format === 'emae-classifier-checkpoint/1'
        ? Object.fromEntries(Object.entries(data).filter(([n]) => n.startsWith('param.')).map(([n, t]) => [n.slice(6), t])) : data;
      checked = checkTensors(this.#params, tensors, strict, file);
    } catch (err) {
      throw withCallerStack(err, context);
    }
    await this.#queue.run(context, () => this.#setParams(checked));
  }

  /**
   * Writes every parameter as safetensors (F32, the names and shapes of MAE's PyTorch models_vit
   * state dict), atomically, with the config and a checksum in the metadata.
   */
  async saveWeights(file: string): Promise<void> {
    const context = new Error();
    this.#assertAlive();
    assertString('file', file, 'path string');
    const params = await this.#queue.run(context, () => this.#handle.getParams());
    const tensors: Record<string, { data: Float32Array; shape: readonly number[] }> = {};
    for (const p of this.#params) tensors[p.name] = { data: params[p.name], shape: p.shape };
    const saved = JSON.stringify(Object.fromEntries(SAVED_KEYS.map((k) => [k, this.#config[k]])));
    try {
      await writeFileAtomic(file, writeSafetensors(tensors, {
        format: 'pt', [CLASSIFIER_CONFIG_KEY]: saved, [CHECKSUM_KEY]: weightsChecksum(tensors, saved),
      }));
    } catch (err) {
      throw withCallerStack(err, context);
    }
  }

  /**
   * Forward and backward on a labelled batch (drop path on, drawn from the seed and the step):
   * the mean cross-entropy and the gradient of every parameter. Nothing is changed. A non-finite
   * loss comes back with NaN gradients (the native backward stops at the loss).
   */
  async lossAndGrads(batch: ClassifierBatch): Promise<{ loss: number; grads: Record<string, Float32Array> }> {
    const context = new Error();
    this.#assertAlive();
    const checked = this.#checkBatch(batch);
    const r = await this.#queue.run(context, () => this.#handle.lossAndGrads(this.#withDropPath(checked)));
    // the native gradient buffer still holds the previous call's: never hand those out as this batch's
    if (!Number.isFinite(r.loss)) for (const g of Object.values(r.grads)) g.fill(Number.NaN);
    return r;
  }

  /**
   * One fine-tuning step: forward (drop path), cross-entropy, backward, optional clipping, AdamW
   * with layer-wise lr decay (no decay for 1-D tensors, biases, pos_embed, cls_token). A
   * non-finite loss rejects and changes nothing.
   */
  async trainStep(batch: ClassifierBatch, options: FinetuneStepOptions): Promise<{ loss: number; gradNorm: number; step: number }> {
    const context = new Error();
    this.#assertAlive();
    assertObject('options', options, 'object with lr');
    assertKnownKeys('trainStep option', options, STEP_KEYS);
    const { lr, weightDecay = 0.05, layerDecay = 0.75, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, clipGrad = 0 } = options;
    assertFiniteNumber('lr', lr, { min: 0, max: 1 }, 'learning rate in [0, 1]');
    assertFiniteNumber('weightDecay', weightDecay, { min: 0 });
    assertFiniteNumber('layerDecay', layerDecay, { above: 0, max: 1 });
    assertFiniteNumber('beta1', beta1, { min: 0, below: 1 });
    assertFiniteNumber('beta2', beta2, { min: 0, below: 1 });
    assertFiniteNumber('eps', eps, { above: 0 });
    assertFiniteNumber('clipGrad', clipGrad, { min: 0 }, 'finite number >= 0 (0 = no clipping)');
    const optim = { lr, weightDecay, layerDecay, beta1, beta2, eps, clipGrad };
    const checked = this.#checkBatch(batch);
    return this.#queue.run(context, async () => {
      const r = await this.#handle.trainStep(this.#withDropPath(checked), optim);
      this.#step = r.step;
      return r;
    });
  }

  /**
   * Logits of whole images (no drop path), Float32Array [batchSize, numClasses]; large inputs are
   * run in chunks of `batchSize` (default: all at once).
   */
  async predict(images: Float32Array, options: { batchSize?: number } = {}): Promise<Float32Array> {
    const context = new Error();
    this.#assertAlive();
    assertObject('options', options, 'object');
    assertKnownKeys('predict option', options, ['batchSize']);
    const c = this.#config, per = c.channels * c.imageSize * c.imageSize;
    if (!isFloat32Array(images)) throw invalidTypeError('images', 'Float32Array [count, channels, imageSize, imageSize]', images);
    const count = images.length / per;
    if (!Number.isInteger(count) || count < 1)
      throw new RangeError(`Expected images of a whole number of ${c.channels}·${c.imageSize}·${c.imageSize} = ${per}-value images but received length ${images.length}`);
    const chunk = options.batchSize ?? count;
    assertPositiveInteger('batchSize', chunk);
    const input = this.#queue.pending > 0 ? images.slice() : images;
    const out = new Float32Array(count * c.numClasses);
    for (let s = 0; s < count; s += chunk) {
      const n = Math.min(chunk, count - s);
      const logits = await this.#queue.run(context, () => this.#handle.predict({ images: input.subarray(s * per, (s + n) * per), batchSize: n }));
      out.set(logits, s * c.numClasses);
    }
    return out;
  }

  /** The per-op profile of this classifier's native steps (EMAE_PROFILE=1 at creation); as EMAE.profile. */
  async profile(options: ProfileOptions = {}): Promise<ProfileReport | ProfileDisabled> {
    const context = new Error();
    this.#assertAlive();
    const nativeOptions = checkProfileOptions(options);
    return toProfileReport(await this.#queue.run(context, () => this.#handle.profile(nativeOptions)));
  }

  /** AdamW state (step count and both moments of every parameter), copied. */
  async getOptimizerState(): Promise<OptimizerState> {
    const context = new Error();
    this.#assertAlive();
    return this.#queue.run(context, () => this.#handle.getOptimizerState());
  }

  /** Restores getOptimizerState()'s result; checked in full before anything is written. */
  async setOptimizerState(state: OptimizerState): Promise<void> {
    const context = new Error();
    this.#assertAlive();
    const copy = checkOptimizerState(this.#params, state);
    await this.#queue.run(context, () => {
      this.#handle.setOptimizerState(copy);
      this.#step = copy.step;
    });
  }

  /** Frees the native memory once the calls already made have finished. */
  dispose(): Promise<void> {
    const handle = this.#handle;
    return this.#queue.close(() => { if (!handle.disposed) handle.dispose(); });
  }

  // ---- internals ----------------------------------------------------------------------------

  #assertAlive(): void {
    if (this.#queue.closed) throw new Error(DISPOSED);
  }

  #setParams(given: Record<string, Float32Array>): void {
    const full = this.#params.every((p) => given[p.name] !== undefined) ? given : { ...this.#handle.getParams(), ...given };
    this.#handle.setParams(Object.fromEntries(this.#params.map((p) => [p.name, full[p.name]])));
  }

  /** The batch with the drop-path factors of the next step (at the call's turn in the queue). */
  #withDropPath(batch: NativeClassifierBatch): NativeClassifierBatch {
    return this.#config.dropPath > 0 ? { ...batch, keep: this.#dropPathKeep(batch.batchSize, this.#step) } : batch;
  }

  /** Validates a batch into soft targets; copies the images (the caller may reuse its arrays). */
  #checkBatch(batch: ClassifierBatch): NativeClassifierBatch {
    assertObject('batch', batch, 'object with images, labels or targets, batchSize');
    assertKnownKeys('batch key', batch, ['images', 'labels', 'targets', 'batchSize']);
    const { images, labels, targets, batchSize } = batch;
    const c = this.#config, Q = c.numClasses;
    assertPositiveInteger('batchSize', batchSize);
    if (!isFloat32Array(images)) throw invalidTypeError('images', 'Float32Array [batchSize, channels, imageSize, imageSize]', images);
    const want = batchSize * c.channels * c.imageSize * c.imageSize;
    if (images.length !== want)
      throw new RangeError(`Expected images of length batchSize·channels·imageSize·imageSize = ${want} but received length ${images.length}`);
    if ((labels === undefined) === (targets === undefined))
      throw new TypeError('Expected exactly one of labels (Int32Array [batchSize]) and targets (Float32Array [batchSize, numClasses]) in the batch');
    let soft: Float32Array;
    if (labels !== undefined) {
      if (!isInt32Array(labels)) throw invalidTypeError('labels', 'Int32Array [batchSize]', labels);
      if (labels.length !== batchSize) throw new RangeError(`Expected labels of length batchSize = ${batchSize} but received length ${labels.length}`);
      const bad = labels.findIndex((y) => y < 0 || y >= Q);
      if (bad >= 0) throw new RangeError(`labels[${bad}] = ${labels[bad]} is not a class index in 0..${Q - 1}`);
      soft = smoothOneHot(labels, Q, c.labelSmoothing);
    } else {
      if (!isFloat32Array(targets)) throw invalidTypeError('targets', 'Float32Array [batchSize, numClasses]', targets);
      if (targets.length !== batchSize * Q)
        throw new RangeError(`Expected targets of length batchSize·numClasses = ${batchSize * Q} but received length ${targets.length}`);
      for (let b = 0; b < batchSize; b++) {
        let sum = 0;
        for (let q = 0; q < Q; q++) {
          const v = targets[b * Q + q];
          if (!(v >= 0 && v <= 1)) throw new RangeError(`targets[${b}, ${q}] = ${v} is not a probability in [0, 1]`);
          sum += v;
        }
        if (Math.abs(sum - 1) > 1e-3) throw new RangeError(`targets row ${b} sums to ${sum}, not 1`);
      }
      soft = this.#queue.pending > 0 ? targets.slice() : targets;  // copied only if the call must wait
    }
    return { images: this.#queue.pending > 0 ? images.slice() : images, targets: soft, batchSize };
  }

  /**
   * Drop-path factors (depth, 2, B): block i drops each sample's branch with probability
   * p_i = dropPath·i/(depth − 1) (0 for one block) and scales kept ones by 1/(1 − p_i) (timm's drop_path), drawn
   * from the seed and the optimizer step, so a resumed run draws the same.
   */
  #dropPathKeep(batchSize: number, step: number): Float32Array {
    const { depth, dropPath, seed } = this.#config;
    const rng = seededRng(seed ^ 0x2d7f1c3b, step);  // one stream per step, apart from the data's
    const keep = new Float32Array(depth * 2 * batchSize);
    for (let i = 0; i < depth; i++) {
      const p = depth > 1 ? (dropPath * i) / (depth - 1) : 0;  // timm's linspace(0, dropPath, depth)
      for (let j = 0; j < 2 * batchSize; j++) keep[i * 2 * batchSize + j] = p > 0 && uniformFloat64(rng) < p ? 0 : 1 / (1 - p);
    }
    return keep;
  }
}

function checkStrict(options: unknown): boolean {
  assertObject('options', options, 'object with strict');
  assertKnownKeys('load option', options, ['strict']);
  const strict = options.strict ?? true;
  if (typeof strict !== 'boolean') throw invalidTypeError('strict', 'boolean', strict);
  return strict;
}

function pick<T>(o: Record<string, T>, names: readonly string[]): Record<string, T> {
  return Object.fromEntries(names.filter((n) => Object.hasOwn(o, n)).map((n) => [n, o[n]]));
}

function zeroState(params: readonly ClassifierParamInfo[]): OptimizerState {
  const zeros = () => Object.fromEntries(params.map((p) => [p.name, new Float32Array(product(p.shape))]));
  return { step: 0, expAvg: zeros(), expAvgSq: zeros() };
}

/** The native classifier config of a resolved config (createClassifier, classifierMemoryPlan). */
function toNativeConfig(r: ReturnType<typeof resolveClassifierConfig>, device: Device, threads: number): NativeClassifierConfig {
  return {
    imageSize: r.imageSize, patchSize: r.patchSize, channels: r.channels, embedDim: r.embedDim, depth: r.depth,
    numHeads: r.numHeads, mlpRatio: r.mlpRatio, numClasses: r.numClasses, globalPool: r.globalPool,
    dropPath: r.dropPath, layerNormEps: r.layerNormEps, seed: r.seed, threads, device, cpuMatmul: r.cpuMatmul,
  };
}

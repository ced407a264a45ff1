// The public model handle (DESIGN §3). Every argument is validated here, before the native
// addon is called, and the error says what was wrong and what was expected; a rejected call
// leaves the model, its optimizer state and files on disk as they were (DESIGN §4).
//
// Calls on one model run one at a time, in call order, through an internal promise queue: the
// native step runs off the JS thread and reads/writes the parameters, so a stateDict() or a
// second step must not overlap it. The batch's arrays are read at call time (copied if the call
// has to wait), so the caller may reuse them as soon as the call returns.
import { readFile } from 'node:fs/promises';
import { resolveConfig, type EMAEConfig, type ResolvedConfig } from './config.js';
import {
  DISPOSED_MESSAGE, assertFiniteNumber, assertKnownKeys, assertObject,
  assertPositiveInteger, assertString, invalidRangeError, invalidTypeError, isFloat32Array, isObject, withCallerStack,
} from './errors.js';
import { ParallelMasker, validatePermutation } from './masker.js';
import { checkMemoryPlanArgs, type ActivationType, type MemoryPlanOptions, type MemoryReport } from './memory.js';
import { native, type NativeBatch, type NativeCudaInfo, type NativeModel, type NativeModelConfig } from './native.js';
import { checkProfileOptions, toProfileReport, type ProfileDisabled, type ProfileOptions, type ProfileReport } from './profile.js';
import { writeFileAtomic, writeSafetensors } from './safetensors.js';
import { CallQueue, checkOptimizerState, checkTensors } from './call-queue.js';
import { architectureDifference, configMetadata, parseWeightsFile } from './weights-file.js';

export type Device = 'cpu' | 'cuda';

/** One parameter of the model (MAE state-dict name). */
export interface ParamInfo {
  name: string;
  shape: number[];
  /** false for the frozen sin-cos positional embeddings */
  trainable: boolean;
  /** AdamW weight decay applies (ndim >= 2 and not a bias) */
  decay: boolean;
}

export interface Batch {
  /** Float32Array [batchSize, channels, imageSize, imageSize] */
  images: Float32Array;
  /** Int32Array [batchSize, N], each row a permutation of 0..N−1 (see ParallelMasker) */
  permutation: Int32Array;
  batchSize: number;
}

export interface LossOptions {
  /** λ for this call (default: config.consistencyWeight) */
  consistencyWeight?: number;
}

export interface TrainStepOptions extends LossOptions {
  /** learning rate for this step (the trainer's schedule sets it per iteration) */
  lr: number;
  /** AdamW decoupled weight decay (default 0.05) */
  weightDecay?: number;
  /** default 0.9 */
  beta1?: number;
  /** default 0.95 */
  beta2?: number;
  /** default 1e-8 */
  eps?: number;
  /** clip gradients to this global L2 norm; 0 = no clipping (default 0) */
  clipGrad?: number;
}

export interface Losses {
  /** L = recon + λ·consistency */
  loss: number;
  recon: number;
  consistency: number;
}

export interface LossAndGradsResult extends Losses {
  /** gradients of the trainable parameters, by state-dict name */
  grads: Record<string, Float32Array>;
}

export interface TrainStepResult extends Losses {
  /** global L2 norm of the gradients before clipping */
  gradNorm: number;
  /** optimizer step count after this step */
  step: number;
}

export interface OptimizerState {
  step: number;
  /** AdamW first moments, per trainable parameter */
  expAvg: Record<string, Float32Array>;
  /** AdamW second moments, per trainable parameter */
  expAvgSq: Record<string, Float32Array>;
}

/** A tensor for loadStateDict: a Float32Array (checked by length) or one with its shape (checked exactly). */
export type StateDictTensor = Float32Array | { data: Float32Array; shape: readonly number[] };

export interface LoadOptions {
  /** Reject missing and unexpected tensors (default true). With false, missing parameters keep their values. */
  strict?: boolean;
}

const TRAIN_OPTION_KEYS = ['lr', 'weightDecay', 'beta1', 'beta2', 'eps', 'clipGrad', 'consistencyWeight'] as const;
const LOSS_OPTION_KEYS = ['consistencyWeight'] as const;
const LOAD_OPTION_KEYS = ['strict'] as const;

const constructToken = Symbol('EMAE.create');

/** Validates the optimizer options of trainStep/applyGradients and fills the defaults. */
function checkOptim(op: string, options: TrainStepOptions, keys: readonly string[]) {
  assertObject('options', options, 'object with lr');
  assertKnownKeys(`${op} option`, options, keys);
  const { lr, weightDecay = 0.05, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, clipGrad = 0 } = options;
  // AdamW moves each weight by about lr per step: beyond 1 a run can only diverge (MAE's peak is ~2.4e-3)
  assertFiniteNumber('lr', lr, { min: 0, max: 1 }, 'learning rate in [0, 1] (AdamW moves each weight by about lr per step)');
  assertFiniteNumber('weightDecay', weightDecay, { min: 0 });
  assertFiniteNumber('beta1', beta1, { min: 0, below: 1 });
  assertFiniteNumber('beta2', beta2, { min: 0, below: 1 });
  assertFiniteNumber('eps', eps, { above: 0 });
  assertFiniteNumber('clipGrad', clipGrad, { min: 0 }, 'finite number >= 0 (0 = no clipping)');
  return { lr, weightDecay, beta1, beta2, eps, clipGrad };
}


/**
 * Internal (lib/distributed.ts): runs `fn` with the model's native handle in the model's call
 * queue, so a gradient all-reduce is ordered with the model's other calls. Not exported publicly.
 */
export let withNativeHandle: <T>(model: EMAE, fn: (handle: NativeModel) => Promise<T>) => Promise<T>;

export class EMAE {
  static {
    withNativeHandle = (model, fn) => {
      const context = new Error();
      model.#assertAlive();
      return model.#enqueue(context, () => fn(model.#handle));
    };
  }
  #handle: NativeModel;
  #config: Readonly<ResolvedConfig>;
  #device: Device;
  #params: readonly ParamInfo[];
  /** the model's calls, one at a time in call order */
  readonly #queue = new CallQueue(() => this.#assertAlive());

  /** Use {@link EMAE.create}. */
  private constructor(token: symbol, handle: NativeModel, config: ResolvedConfig, device: Device) {
    if (token !== constructToken) throw new TypeError('Use EMAE.create(config) to make a model');
    this.#handle = handle;
    this.#config = Object.freeze({ ...config });
    this.#device = device;
    this.#params = Object.freeze(handle.paramInfo().map((p) => Object.freeze({
      name: p.name, shape: Object.freeze([...p.shape]) as number[], trainable: p.trainable, decay: p.decay,
    })));
  }

  /**
   * Validates the config (see resolveConfig), picks the device and allocates the model with MAE's
   * initialization.
   * @throws {TypeError|RangeError} a bad config (the key is named)
   * @throws {Error} device 'cuda' without a usable CUDA backend; the addon failing to load
   */
  static async create(config: EMAEConfig): Promise<EMAE> {
    const context = new Error();
    const resolved = resolveConfig(config);
    const addon = native();
    const device = pickDevice(resolved.device, () => addon.cudaInfo());
    let threads = resolved.threads;
    if (threads === undefined) {
      threads = addon.defaultThreads();
      assertPositiveInteger('defaultThreads() of the native addon', threads);
    }
    const nativeConfig = toNativeConfig(resolved, device, threads);
    if (device === 'cpu' && resolved.cpuMatmul === 'bf16') {
      const bf16 = addon.cpuBf16Available();
      if (!bf16.available) throw new Error(`cpuMatmul 'bf16' is not available on this machine: ${bf16.reason}; use 'fp32'`);
    }
    let handle: NativeModel;
    try {
      handle = await addon.createModel(nativeConfig);
    } catch (err) {
      throw withCallerStack(err, context);
    }
    return new EMAE(constructToken, handle, { ...resolved, device, threads }, device);
  }

  /**
   * The backend memory a training step at `batchSize` would hold for a model of `config`, planned
   * without creating one (nothing is allocated): parameters, gradients, AdamW moments, the bf16
   * weight copy and the activation arena, in bytes. `activations: 'bf16'` plans the GPU's bf16
   * storage (EMAE_ACTIVATIONS=bf16), which also keeps a bf16 copy of the weights.
   * @throws {TypeError|RangeError} a bad config, batchSize or option (named)
   */
  static memoryPlan(config: EMAEConfig, batchSize: number, options: MemoryPlanOptions = {}): MemoryReport {
    const resolved = resolveConfig(config);
    const activations = checkMemoryPlanArgs(batchSize, options);
    const plan = native().modelMemoryPlan(toNativeConfig(resolved, 'cpu', resolved.threads ?? 1), batchSize, activations);
    return { ...plan };
  }

  /**
   * The backend memory a training step at `batchSize` holds on this model's backend (see
   * {@link EMAE.memoryPlan}), for the activation type it was created with. Planned, not measured:
   * nothing is allocated, and it may be called while a step runs.
   * @throws {TypeError|RangeError} batchSize not a positive integer
   */
  memory(batchSize: number): MemoryReport {
    this.#assertAlive();
    assertPositiveInteger('batchSize', batchSize);
    return { ...this.#handle.memory(batchSize) };
  }

  /** The resolved config (frozen): defaults filled in, device and threads as used. */
  get config(): Readonly<ResolvedConfig> {
    return this.#config;
  }

  /** Where the model lives. */
  get device(): Device {
    return this.#device;
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

  /** Name, shape, trainable and decay of every parameter, in state-dict order (copies). */
  paramInfo(): ParamInfo[] {
    this.#assertAlive();
    return this.#params.map((p) => ({ ...p, shape: [...p.shape] }));
  }

  /** Copies of every parameter, by MAE state-dict name (positional embeddings included). */
  async stateDict(): Promise<Record<string, Float32Array>> {
    const context = new Error();
    this.#assertAlive();
    return this.#enqueue(context, () => this.#handle.getParams());
  }

  /**
   * Replaces the parameters. Every name, kind and shape is checked against paramInfo() before
   * anything is written; on error the model is unchanged.
   * @throws {TypeError} a tensor that is not a Float32Array
   * @throws {RangeError} a missing or (strict) unexpected tensor, a wrong shape; the tensor is named
   */
  async loadStateDict(dict: Record<string, StateDictTensor>, options: LoadOptions = {}): Promise<void> {
    const context = new Error();
    this.#assertAlive();
    const strict = checkLoadOptions(options);
    assertObject('state dict', dict, 'object mapping parameter names to Float32Array');
    const tensors: Record<string, { data: unknown; shape?: readonly number[]; dtype?: string }> = {};
    for (const [name, value] of Object.entries(dict)) {
      tensors[name] = isObject(value) && !isFloat32Array(value)
        ? { data: value.data, shape: value.shape as readonly number[] }
        : { data: value };
    }
    const checked = checkTensors(this.#params, tensors, strict, 'state dict');
    await this.#enqueue(context, () => this.#setParams(checked));
  }

  /**
   * Loads safetensors weights with MAE state-dict names (F32): a file saveWeights() or PyTorch's
   * safetensors.torch.save_file wrote, or an emae checkpoint (saveCheckpoint), whose parameters
   * are loaded and whose optimizer state is not (loadCheckpoint or Trainer.resume restore both).
   * A file with a checksum is verified first; a file with a saved config must match this model's
   * architecture (ARCHITECTURE_KEYS; with `strict: false` it is not compared). On error the model
   * is unchanged.
   * @throws {RangeError} a corrupted or truncated file (the message says 'corrupt'); a file saved
   *   for another architecture (the differing keys are named); a missing, unexpected or
   *   mis-shaped tensor (named)
   * @throws {TypeError} a tensor of another dtype than F32
   */
  async loadWeights(file: string, options: LoadOptions = {}): Promise<void> {
    const context = new Error();
    this.#assertAlive();
    assertString('file', file, 'path string');
    const strict = checkLoadOptions(options);
    let checked: Record<string, Float32Array>;
    try {
      const { kind, config, data } = parseWeightsFile(await readFile(file), file);
      if (strict && config !== undefined) {
        const diff = architectureDifference(resolveConfig(config), 'the file', this.#config, 'this model');
        if (diff) {
          throw new RangeError(`cannot load ${file}: it was saved for another model: ${diff} ` +
            '(readWeightsInfo(file).config is the config it was saved with)');
        }
      }
      let tensors = data;
      if (kind === 'checkpoint') {
        // a checkpoint holds the parameters as param.<name> beside the AdamW moments
        tensors = Object.fromEntries(Object.entries(data).filter(([n]) => n.startsWith('param.')).map(([n, t]) => [n.slice(6), t]));
      }
      checked = checkTensors(this.#params, tensors, strict, file);
    } catch (err) {
      throw withCallerStack(err, context);
    }
    await this.#enqueue(context, () => this.#setParams(checked));
  }

  /**
   * Writes every parameter as safetensors (F32, MAE names and shapes), atomically: a temporary
   * file, then a rename. The metadata holds format 'pt' (safetensors.torch.load_file requires
   * it), emae_config (this model's config as JSON, see SAVED_CONFIG_KEYS) and sha256 (the
   * checksum loadWeights verifies), all strings as the format requires.
   */
  async saveWeights(file: string): Promise<void> {
    const context = new Error();
    this.#assertAlive();
    assertString('file', file, 'path string');
    const params = await this.#enqueue(context, () => this.#handle.getParams());
    const tensors: Record<string, { data: Float32Array; shape: readonly number[] }> = {};
    for (const p of this.#params) tensors[p.name] = { data: params[p.name], shape: p.shape };
    try {
      await writeFileAtomic(file, writeSafetensors(tensors, { format: 'pt', ...configMetadata(this.#config, tensors) }));
    } catch (err) {
      throw withCallerStack(err, context);
    }
  }

  /**
   * Forward and backward on one batch: the losses and the gradients of the trainable parameters.
   * Parameters and optimizer state are not changed.
   * @throws {TypeError} images not a Float32Array, permutation not an Int32Array, a non-number
   * @throws {RangeError} wrong lengths, a row that is not a permutation, bad batchSize or λ
   */
  async lossAndGrads(batch: Batch, options: LossOptions = {}): Promise<LossAndGradsResult> {
    const context = new Error();
    this.#assertAlive();
    assertObject('options', options);
    assertKnownKeys('lossAndGrads option', options, LOSS_OPTION_KEYS);
    const nativeBatch = this.#checkBatch(batch, this.#consistencyWeight(options));
    const r = await this.#enqueue(context, () => this.#handle.lossAndGrads(nativeBatch));
    return { loss: r.loss, recon: r.recon, consistency: r.consistency, grads: r.grads };
  }

  /**
   * One training step: forward, backward, optional clipping, AdamW (decoupled weight decay, bias
   * correction; no decay for 1-D parameters and biases; positional embeddings frozen).
   * A non-finite loss rejects and leaves parameters and optimizer untouched.
   * @throws {TypeError|RangeError} as lossAndGrads, and for the optimizer options
   */
  async trainStep(batch: Batch, options: TrainStepOptions): Promise<TrainStepResult> {
    const context = new Error();
    this.#assertAlive();
    const optim = checkOptim('trainStep', options, TRAIN_OPTION_KEYS);
    const nativeBatch = this.#checkBatch(batch, this.#consistencyWeight(options));
    const r = await this.#enqueue(context, () => this.#handle.trainStep(nativeBatch, optim));
    return { loss: r.loss, recon: r.recon, consistency: r.consistency, gradNorm: r.gradNorm, step: r.step };
  }
  /**
   * Encoder features of whole, unmasked images (batched, asynchronous): `pool: 'cls'` (default)
   * takes the cls token, `'mean'` averages the patch tokens — after the encoder's final norm.
   * @returns Float32Array [batchSize, embedDim]
   */
  async encode(images: Float32Array, options: { batchSize?: number; pool?: 'cls' | 'mean' } = {}): Promise<Float32Array> {
    const context = new Error();
    this.#assertAlive();
    assertObject('options', options, 'object');
    assertKnownKeys('encode option', options, ['batchSize', 'pool']);
    const c = this.#config, per = c.channels * c.imageSize * c.imageSize;
    if (!isFloat32Array(images)) throw invalidTypeError('images', 'Float32Array [batchSize, channels, imageSize, imageSize]', images);
    const batchSize = options.batchSize ?? images.length / per;
    assertPositiveInteger('batchSize', batchSize);
    if (images.length !== batchSize * per)
      throw new RangeError(`Expected images of length batchSize·${per} = ${batchSize * per} but received length ${images.length}`);
    const pool = options.pool ?? 'cls';
    if (pool !== 'cls' && pool !== 'mean') throw invalidRangeError('pool', "'cls' or 'mean'", pool);
    const input = { images: this.#queue.pending > 0 ? images.slice() : images, batchSize };
    const tokens = await this.#enqueue(context, () => this.#handle.encode(input));
    const T = 1 + c.numPatches, D = c.embedDim;
    const out = new Float32Array(batchSize * D);
    for (let b = 0; b < batchSize; b++) {
      const row = out.subarray(b * D, (b + 1) * D);
      if (pool === 'cls') {
        row.set(tokens.subarray(b * T * D, b * T * D + D));
      } else {
        for (let t = 1; t < T; t++) for (let d = 0; d < D; d++) row[d] += tokens[(b * T + t) * D + d];
        for (let d = 0; d < D; d++) row[d] /= T - 1;
      }
    }
    return out;
  }

  /**
   * Forward only: each part's predictions turned back into images. Predicted patches are
   * un-normalized with each patch's own mean and variance when normPixLoss is on; the visible
   * patches of a part are pasted in from the input. `assembled` puts in every patch the mean of
   * the predictions of the parts that mask it (the input where no part masks it).
   * @returns parts [B, K, C, H, W], assembled [B, C, H, W], visible [B, K, N] (1 = visible in part k), losses
   */
  async reconstruct(images: Float32Array, options: { permutation?: Int32Array; seed?: number; batchSize?: number } = {}):
    Promise<Losses & { parts: Float32Array; assembled: Float32Array; visible: Uint8Array }> {
    const context = new Error();
    this.#assertAlive();
    assertObject('options', options, 'object');
    assertKnownKeys('reconstruct option', options, ['permutation', 'seed', 'batchSize']);
    const c = this.#config, per = c.channels * c.imageSize * c.imageSize;
    if (!isFloat32Array(images)) throw invalidTypeError('images', 'Float32Array [batchSize, channels, imageSize, imageSize]', images);
    const B = options.batchSize ?? images.length / per;
    assertPositiveInteger('batchSize', B);
    const permutation = options.permutation ??
      new ParallelMasker({ numPatches: c.numPatches, partsTotal: c.partsTotal, parts: c.parts, seed: options.seed ?? 0 }).next(B);
    const nativeBatch = this.#checkBatch({ images, permutation, batchSize: B }, this.#config.consistencyWeight);
    const r = await this.#enqueue(context, () => this.#handle.predict(nativeBatch));
    const K = c.parts, N = c.numPatches, V = c.visiblePerPart, P = c.patchDim, p = c.patchSize, C = c.channels, S = c.imageSize;
    const grid = S / p;
    const parts = new Float32Array(B * K * per), assembled = new Float32Array(B * per), counts = new Float32Array(B * N);
    const visible = new Uint8Array(B * K * N);
    for (let b = 0; b < B; b++)
      for (let k = 0; k < K; k++)
        for (let v = 0; v < V; v++) visible[(b * K + k) * N + permutation[b * N + k * V + v]] = 1;
    for (let b = 0; b < B; b++)
      for (let n = 0; n < N; n++) {
        const gy = Math.floor(n / grid), gx = n % grid;
        const at = (q: number) => {  // pixel index in an image for element q = (i·p + j)·C + ch of patch n
          const ch = q % C, j = Math.floor(q / C) % p, i = Math.floor(q / (C * p));
          return (ch * S + gy * p + i) * S + gx * p + j;
        };
        // this patch's statistics in the input, for un-normalizing (unbiased variance, as the target)
        let mean = 0, ss = 0;
        for (let q = 0; q < P; q++) mean += images[b * per + at(q)];
        mean /= P;
        for (let q = 0; q < P; q++) ss += (images[b * per + at(q)] - mean) ** 2;
        const scale = Math.sqrt(ss / (P - 1) + 1e-6);
        for (let k = 0; k < K; k++) {
          const dst = parts.subarray((b * K + k) * per, (b * K + k + 1) * per);
          const isVisible = visible[(b * K + k) * N + n] === 1;
          for (let q = 0; q < P; q++) {
            const y = r.pred[((b * K + k) * (1 + N) + 1 + n) * P + q];
            const value = isVisible ? images[b * per + at(q)] : c.normPixLoss ? y * scale + mean : y;
            dst[at(q)] = value;
            if (!isVisible) assembled[b * per + at(q)] += value;
          }
          if (!isVisible) counts[b * N + n] += 1;
        }
        for (let q = 0; q < P; q++) {
          const i = b * per + at(q);
          assembled[i] = counts[b * N + n] > 0 ? assembled[i] / counts[b * N + n] : images[i];
        }
      }
    return { loss: r.loss, recon: r.recon, consistency: r.consistency, parts, assembled, visible };
  }

  /**
   * Gradient accumulation, step 1: forward and backward of one micro-batch, adding its gradients
   * to those already accumulated (`reset: true` starts afresh). Returns the micro-batch's losses.
   * Follow with applyGradients({ ..., gradScale: 1 / microBatches }).
   */
  async accumulateGradients(batch: Batch, options: LossOptions & { reset?: boolean } = {}): Promise<Losses> {
    const context = new Error();
    this.#assertAlive();
    assertObject('options', options, 'object');
    assertKnownKeys('accumulateGradients option', options, [...LOSS_OPTION_KEYS, 'reset']);
    const reset = options.reset ?? false;
    if (typeof reset !== 'boolean') throw invalidTypeError('reset', 'boolean', reset);
    const nativeBatch = this.#checkBatch(batch, this.#consistencyWeight(options));
    const r = await this.#enqueue(context, () => this.#handle.accumulateGrads(nativeBatch, { reset }));
    return { loss: r.loss, recon: r.recon, consistency: r.consistency };
  }

  /**
   * Gradient accumulation, step 2: scales the accumulated gradients by `gradScale` (default 1),
   * clips and takes the AdamW step. Non-finite gradients reject (code EMAE_NONFINITE_LOSS) and
   * change nothing.
   */
  async applyGradients(options: Omit<TrainStepOptions, 'consistencyWeight'> & { gradScale?: number }): Promise<{ gradNorm: number; step: number }> {
    const context = new Error();
    this.#assertAlive();
    const { gradScale = 1, ...rest } = (options ?? {}) as { gradScale?: number } & TrainStepOptions;
    assertFiniteNumber('gradScale', gradScale, { above: 0 });
    const optim = checkOptim('applyGradients', rest, TRAIN_OPTION_KEYS.filter((k) => k !== 'consistencyWeight'));
    const r = await this.#enqueue(context, () => this.#handle.applyGrads({ ...optim, gradScale }));
    return { gradNorm: r.gradNorm, step: r.step };
  }

  /**
   * The per-op profile of this model's native steps: with `EMAE_PROFILE=1` in the environment when
   * the model was created, every Backend op its calls made since creation (or the last
   * `reset: true`), with calls and time per op and shape, and the steps' time against their ops'
   * (the gap); see {@link ProfileReport}. Without it, `{ enabled: false, reason }` (profiling
   * costs nothing then). Runs after the calls already made; on CUDA it waits for the device to
   * finish them.
   * @throws {TypeError} options other than `{ reset?: boolean }`
   */
  async profile(options: ProfileOptions = {}): Promise<ProfileReport | ProfileDisabled> {
    const context = new Error();
    this.#assertAlive();
    const nativeOptions = checkProfileOptions(options);
    return toProfileReport(await this.#enqueue(context, () => this.#handle.profile(nativeOptions)));
  }

  /** AdamW state (step count and moments of every trainable parameter), copied. */
  async getOptimizerState(): Promise<OptimizerState> {
    const context = new Error();
    this.#assertAlive();
    const s = await this.#enqueue(context, () => this.#handle.getOptimizerState());
    return { step: s.step, expAvg: s.expAvg, expAvgSq: s.expAvgSq };
  }

  /**
   * Restores AdamW state from getOptimizerState(). Checked in full before anything is written.
   * @throws {TypeError} a moment that is not a Float32Array, a non-number step
   * @throws {RangeError} a missing or unexpected parameter, a wrong length, a bad step
   */
  async setOptimizerState(state: OptimizerState): Promise<void> {
    const context = new Error();
    this.#assertAlive();
    const copy = checkOptimizerState(this.#params.filter((p) => p.trainable), state);
    await this.#enqueue(context, () => this.#handle.setOptimizerState(copy));
  }

  /**
   * Frees the native memory once the calls already made have finished; every later call rejects
   * with "EMAE model has been disposed". Calling it again does nothing.
   */
  dispose(): Promise<void> {
    const handle = this.#handle;
    return this.#queue.close(() => { if (!handle.disposed) handle.dispose(); });
  }

  // ---- internals ----------------------------------------------------------------------------

  #assertAlive(): void {
    if (this.#queue.closed) throw new Error(DISPOSED_MESSAGE);
  }

  /** Runs `fn` after every earlier call on this model has settled (CallQueue.run). */
  #enqueue<T>(context: Error, fn: () => T | Promise<T>): Promise<T> {
    return this.#queue.run(context, fn);
  }

  #consistencyWeight(options: LossOptions): number {
    const w = options.consistencyWeight ?? this.#config.consistencyWeight;
    assertFiniteNumber('consistencyWeight', w, { min: 0 });
    return w;
  }

  /** Validates a batch; copies its arrays when the call will have to wait for an earlier one. */
  #checkBatch(batch: Batch, consistencyWeight: number): NativeBatch {
    assertObject('batch', batch, 'object with images, permutation, batchSize');
    const { images, permutation, batchSize } = batch;
    const c = this.#config;
    assertPositiveInteger('batchSize', batchSize);
    if (!isFloat32Array(images)) {
      throw invalidTypeError('images', `Float32Array [batchSize, channels, imageSize, imageSize]`, images);
    }
    const want = batchSize * c.channels * c.imageSize * c.imageSize;
    if (images.length !== want) {
      throw new RangeError(`Expected images of length batchSize·channels·imageSize·imageSize = ` +
        `${batchSize}·${c.channels}·${c.imageSize}·${c.imageSize} = ${want} but received length ${images.length}`);
    }
    validatePermutation(permutation, batchSize, c.numPatches);
    const wait = this.#queue.pending > 0;
    return {
      images: wait ? images.slice() : images,
      permutation: wait ? permutation.slice() : permutation,
      batchSize,
      consistencyWeight,
    };
  }

  /** Fills parameters not given (non-strict loads) with their current values, then one native write. */
  #setParams(given: Record<string, Float32Array>): void {
    const full = this.#params.every((p) => given[p.name] !== undefined) ? given : { ...this.#handle.getParams(), ...given };
    const dict: Record<string, Float32Array> = {};
    for (const p of this.#params) dict[p.name] = full[p.name];
    this.#handle.setParams(dict);
  }
}

function checkLoadOptions(options: unknown): boolean {
  assertObject('options', options, 'object with strict');
  assertKnownKeys('load option', options, LOAD_OPTION_KEYS);
  const strict = options.strict ?? true;
  if (typeof strict !== 'boolean') throw invalidTypeError('strict', 'boolean', strict);
  return strict;
}

/**
 * 'auto' is CUDA device 0 when the addon was built with CUDA and the runtime sees a device of
 * compute capability 8.0 or newer, else the CPU. 'cuda' without such a device is refused with
 * what the addon reported, so the user sees why.
 */
export function pickDevice(requested: ResolvedConfig['device'], cudaInfo: () => NativeCudaInfo): Device {
  if (requested === 'cpu') return 'cpu';
  const info = cudaInfo();
  const usable = info.compiled && info.devices.length > 0 && Number(info.devices[0].computeCapability) >= 8;
  if (usable) return 'cuda';
  if (requested === 'auto') return 'cpu';
  let why: string;
  if (!info.compiled) {
    why = 'this build of the emae addon has no CUDA backend (built without a CUDA compiler; rebuild with EMAE_CUDA=ON)';
  } else if (info.devices.length === 0) {
    why = `no CUDA device is usable${info.error ? `: ${info.error}` : ''} (compiled for architectures ${info.architectures || 'none'})`;
  } else {
    const d = info.devices[0];
    why = `CUDA device 0 (${d.name}) has compute capability ${d.computeCapability}; emae needs 8.0 or newer`;
  }
  throw new Error(`device 'cuda' was requested but cannot be used: ${why}. Use device 'cpu' or 'auto'.`);
}

/** The native model config of a resolved config (createModel, modelMemoryPlan). */
function toNativeConfig(resolved: ResolvedConfig, device: Device, threads: number): NativeModelConfig {
  return {
    imageSize: resolved.imageSize,
    patchSize: resolved.patchSize,
    channels: resolved.channels,
    embedDim: resolved.embedDim,
    depth: resolved.depth,
    numHeads: resolved.numHeads,
    decoderEmbedDim: resolved.decoderEmbedDim,
    decoderDepth: resolved.decoderDepth,
    decoderNumHeads: resolved.decoderNumHeads,
    mlpRatio: resolved.mlpRatio,
    parts: resolved.parts,
    partsTotal: resolved.partsTotal,
    normPixLoss: resolved.normPixLoss,
    consistencyDistance: resolved.consistencyDistance,
    layerNormEps: resolved.layerNormEps,
    seed: resolved.seed,
    threads,
    device,
    cpuMatmul: resolved.cpuMatmul,
  };
}

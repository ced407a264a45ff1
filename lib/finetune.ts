// The fine-tuning loop: MAE's main_finetune.py recipe on an in-memory labelled set or an image
// folder with class sub-folders (torchvision's ImageFolder layout) — lr = blr · batch / 256,
// linear warm-up then half-cycle cosine to minLr per iteration, AdamW with layer-wise lr decay
// (Classifier.trainStep), random resized crop + flip, optionally RandAugment and random erasing,
// mixup/cutmix into soft targets (else label smoothing), drop path; top-1 on a test set after
// every epoch; a JSON-lines log, atomic checkpoints every epoch and an exact resume. A folder's
// batches are decoded as they are drawn (RandomResizedCrop + flip on the full-size image; a test
// folder with MAE's resize + centre crop), `prefetch` batches ahead, seeded by the step so a
// resumed run repeats them. Single process (data parallelism is the pretraining Trainer's; not
// here yet).
import { randomBytes } from 'node:crypto';
import { appendFile, readFile } from 'node:fs/promises';
import path from 'node:path';
import { BatchQueue, EpochBatches, assertDataCursor } from './batch-cursor.js';
import { listCheckpoints } from './checkpoint.js';
import { CLASSIFIER_CONFIG_KEY, classifierConfigDifference, type Classifier } from './classifier.js';
import type { LabelledImageSet, Normalization } from './data.js';
import { assertFiniteNumber, assertKnownKeys, assertObject, invalidParameterError, invalidRangeError, invalidTypeError } from './errors.js';
import {
  Mixup, assertNormalization, augmentBatch, randAugment, randAugmentSettings, randomErasing, randomErasingSettings,
  type RandAugmentOptions, type RandomErasingOptions,
} from './finetune-data.js';
import { ImageFolder, type FolderTransform } from './folder.js';
import { seededRng } from './rng.js';
import { LOG_FILE, newestRunCheckpoint, prepareRunFolder, pruneRunCheckpoints } from './run-folder.js';
import { writeFileAtomic, writeSafetensors, type SafetensorsInput } from './safetensors.js';
import { lrAt, scaledLr } from './schedule.js';
import { CHECKSUM_KEY, parseWeightsFile, weightsChecksum } from './weights-file.js';

export const CLASSIFIER_CHECKPOINT_FORMAT = 'emae-classifier-checkpoint/1';

/**
 * Labelled images: held in memory, or an ImageFolder whose images all sit in class sub-folders
 * (decoded at the folder's size, which must be the classifier's; its classes are the classes).
 */
export type FinetuneData = LabelledImageSet | ImageFolder;

export interface FinetuneOptions {
  batchSize: number;
  epochs: number;
  /** base learning rate; lr = blr · batchSize / 256 (default 1e-3, MAE's main_finetune.py) */
  blr?: number;
  /** floor of the cosine (default 1e-6, MAE's) */
  minLr?: number;
  /** warm-up epochs, fractional allowed (default min(5, epochs / 10); MAE's is 5 of 100) */
  warmupEpochs?: number;
  weightDecay?: number;
  /** layer-wise lr decay (default 0.75, MAE's) */
  layerDecay?: number;
  /** clip the global gradient norm; 0 none (default 0, MAE's) */
  clipGrad?: number;
  /** mixup alpha; 0 off (default 0.8, MAE's recipe) */
  mixup?: number;
  /** cutmix alpha; 0 off (default 1.0, MAE's recipe) */
  cutmix?: number;
  /** probability of mixing a batch (default 1) */
  mixupProb?: number;
  /** probability of cutmix when both are on (default 0.5) */
  mixupSwitchProb?: number;
  /**
   * random resized crop and horizontal flip (default true); false: the images as they are, or for
   * a folder MAE's evaluation transform (short side resized, centre crop). RandAugment and random
   * erasing are the two options below.
   */
  augment?: boolean;
  /**
   * RandAugment after the crop and flip, on the un-normalized pixels (`randAugment`), or false
   * (default false: off). MAE's recipe (`--aa rand-m9-mstd0.5-inc1`) is
   * { ops: 2, magnitude: 9, magnitudeStd: 0.5, increasing: true }, the defaults of what an object leaves out.
   */
  randAugment?: RandAugmentOptions | false;
  /**
   * random erasing after RandAugment, in the normalized space (`randomErasing`): the probability
   * per image (mode 'pixel', one rectangle), or the options; default 0: off. MAE's recipe is 0.25
   * (`--reprob 0.25 --remode pixel --recount 1`).
   */
  randomErasing?: number | RandomErasingOptions;
  /**
   * how the images were normalized, for RandAugment's pixel ops (default: the data's own —
   * a folder's mean/std, a loaded set's `normalization`)
   */
  normalization?: Normalization;
  /** area range of the random resized crop (default [0.08, 1], MAE's) */
  cropScale?: readonly [number, number];
  /** folder data: batches decoding while one is computed (default 2; 0 = none) */
  prefetch?: number;
  /** seed of the data order, augmentation and mixing (default 0); drop path uses the classifier's */
  seed?: number;
  /** scored (top-1) after every epoch; a folder with MAE's resize + centre crop, and the classes of a training folder */
  testData?: FinetuneData;
  /** batch of the test-set forward passes (default 256) */
  evalBatchSize?: number;
  /** folder for log.jsonl and checkpoints (must be missing or empty unless `overwrite`) */
  outDir?: string;
  overwrite?: boolean;
  /** checkpoint every N epochs and at the end (default 1) */
  checkpointEvery?: number;
  /** checkpoints of this run to keep (default 2) */
  keepLast?: number;
  onStep?: (info: FinetuneStepInfo) => void | Promise<void>;
  onEpoch?: (info: FinetuneEpochInfo) => void | Promise<void>;
}

export interface FinetuneStepInfo {
  step: number;
  epoch: number;
  loss: number;
  lr: number;
  gradNorm: number;
  imagesPerSecond: number;
}

export interface FinetuneEpochInfo {
  /** 0-based epoch just completed */
  epoch: number;
  step: number;
  /** mean training loss over the epoch */
  trainLoss: number;
  /** top-1 accuracy on testData (absent without it) */
  testTop1?: number;
  seconds: number;
}

interface FinetuneState {
  step: number;
  epoch: number;
  /** next position in the epoch's order */
  position: number;
  seed: number;
  batchSize: number;
  runId: string;
  /** a folder's class names (checked on resume) */
  classes?: string[];
}

const OPTION_KEYS = ['batchSize', 'epochs', 'blr', 'minLr', 'warmupEpochs', 'weightDecay', 'layerDecay', 'clipGrad', 'mixup',
  'cutmix', 'mixupProb', 'mixupSwitchProb', 'augment', 'randAugment', 'randomErasing', 'normalization', 'cropScale', 'prefetch',
  'seed', 'testData', 'evalBatchSize', 'outDir', 'overwrite', 'checkpointEvery', 'keepLast', 'onStep', 'onEpoch'] as const;

/**
 * Top-1 accuracy of `model` on a labelled set: in memory, the images as they are; a folder,
 * decoded with MAE's evaluation transform (short side resized, centre crop) whatever its own crop,
 * `batchSize` images at a time, the next batch decoding while one is scored (an image that fails
 * to decode is replaced by the next readable one, as in training, and reported by the folder).
 * `onProgress(done, total)` after every batch of a folder.
 */
export async function top1Accuracy(model: Classifier, data: FinetuneData, batchSize = 256,
  onProgress?: (done: number, total: number) => void): Promise<number> {
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw invalidRangeError('batchSize', 'positive integer', batchSize);
  const Q = model.config.numClasses;
  let correct = 0;
  const score = (logits: Float32Array, labels: ArrayLike<number>) => {
    for (let i = 0; i < labels.length; i++) {
      let best = 0;
      for (let q = 1; q < Q; q++) if (logits[i * Q + q] > logits[i * Q + best]) best = q;
      if (best === labels[i]) correct++;
    }
  };
  if (!(data instanceof ImageFolder)) {
    if (!data.labels || data.labels.length < data.count) throw new RangeError('top1Accuracy: the data has no labels for every image');
    score(await model.predict(data.images.subarray(0, data.count * data.channels * data.size * data.size), { batchSize }), data.labels.subarray(0, data.count));
    return correct / data.count;
  }
  checkFolder('data', data, model.config);
  const n = data.count;
  const load = (start: number) => {
    const loading = data.loadBatch(Int32Array.from({ length: Math.min(batchSize, n - start) }, (_, i) => start + i), 0, { crop: 'center' });
    loading.catch(() => {});  // awaited below; no unhandled rejection if predict fails first
    return loading;
  };
  let next = load(0);
  for (let start = 0; start < n; start += batchSize) {
    const batch = await next;
    if (start + batchSize < n) next = load(start + batchSize);
    score(await model.predict(batch.images, { batchSize }), batch.labels);
    onProgress?.(start + batch.labels.length, n);
  }
  return correct / n;
}

export class FineTuner {
  readonly #model: Classifier;
  readonly #data: FinetuneData;
  readonly #o: Required<Omit<FinetuneOptions, 'testData' | 'outDir' | 'onStep' | 'onEpoch' | 'randAugment' | 'randomErasing' | 'normalization'>> &
    Pick<FinetuneOptions, 'testData' | 'outDir' | 'onStep' | 'onEpoch'> & {
      randAugment: Required<RandAugmentOptions> | false;
      /** off when undefined or of probability 0 */
      randomErasing: Required<RandomErasingOptions> | undefined;
      /** the images' normalization, with RandAugment on */
      normalization: Normalization | undefined;
    };
  /** a folder's class names, recorded in checkpoints */
  readonly #classes: string[] | undefined;
  readonly #mixup: Mixup | undefined;
  #state: FinetuneState;
  #stopRequested = false;
  #resumedFrom: string | undefined;
  #prepared = false;
  #epochLoss = { sum: 0, count: 0 };
  /** the epochs' shuffled orders, read in batches (MAE's drop_last) */
  readonly #batches: EpochBatches;

  /**
   * @throws {TypeError | RangeError} a bad option (named), data or testData that do not fit the
   *   classifier (size, channels, labels, a folder's classes), train and test folders whose
   *   classes differ
   */
  constructor(model: Classifier, data: FinetuneData, options: FinetuneOptions) {
    const c = model.config;
    assertObject('options', options, 'object with batchSize and epochs');
    assertKnownKeys('fine-tuning option', options, OPTION_KEYS);
    const check = (name: string, d: FinetuneData) => d instanceof ImageFolder ? checkFolder(name, d, c) : checkLabelled(name, d, c);
    check('data', data);
    if (options.testData !== undefined) check('testData', options.testData);
    if (data instanceof ImageFolder && options.testData instanceof ImageFolder) {
      const diff = classesDifference(data.classes, 'the training folder', options.testData.classes, 'the test folder');
      if (diff) throw new RangeError(`testData: the classes of the test folder ${options.testData.root} differ from those of the training folder ${data.root}: ${diff}`);
    }
    const positiveInt = (name: string, v: unknown) => {
      if (!Number.isSafeInteger(v) || (v as number) < 1) throw invalidRangeError(name, 'positive integer', v);
      return v as number;
    };
    const batchSize = positiveInt('batchSize', options.batchSize);
    if (batchSize > data.count) throw invalidRangeError('batchSize', `at most the dataset size ${data.count}`, batchSize);
    const epochs = positiveInt('epochs', options.epochs);
    const o = {
      batchSize, epochs,
      blr: options.blr ?? 1e-3,
      minLr: options.minLr ?? 1e-6,
      warmupEpochs: options.warmupEpochs ?? Math.min(5, epochs / 10),
      weightDecay: options.weightDecay ?? 0.05,
      layerDecay: options.layerDecay ?? 0.75,
      clipGrad: options.clipGrad ?? 0,
      mixup: options.mixup ?? 0.8,
      cutmix: options.cutmix ?? 1.0,
      mixupProb: options.mixupProb ?? 1,
      mixupSwitchProb: options.mixupSwitchProb ?? 0.5,
      augment: options.augment ?? true,
      ...augmentationSettings(options, data, c.channels),
      cropScale: options.cropScale ?? [0.08, 1] as const,
      prefetch: options.prefetch ?? 2,
      seed: options.seed ?? 0,
      evalBatchSize: positiveInt('evalBatchSize', options.evalBatchSize ?? 256),
      overwrite: options.overwrite ?? false,
      checkpointEvery: positiveInt('checkpointEvery', options.checkpointEvery ?? 1),
      keepLast: positiveInt('keepLast', options.keepLast ?? 2),
      testData: options.testData, outDir: options.outDir, onStep: options.onStep, onEpoch: options.onEpoch,
    };
    assertFiniteNumber('blr', o.blr, { above: 0 });
    if (scaledLr(o.blr, batchSize) > 1) throw invalidRangeError('blr', `a base learning rate whose lr = blr·${batchSize}/256 is at most 1`, o.blr);
    assertFiniteNumber('minLr', o.minLr, { min: 0 });
    assertFiniteNumber('warmupEpochs', o.warmupEpochs, { min: 0, max: epochs });
    assertFiniteNumber('weightDecay', o.weightDecay, { min: 0 });
    assertFiniteNumber('layerDecay', o.layerDecay, { above: 0, max: 1 });
    assertFiniteNumber('clipGrad', o.clipGrad, { min: 0 });
    for (const k of ['mixup', 'cutmix'] as const) assertFiniteNumber(k, o[k], { min: 0 });
    for (const k of ['mixupProb', 'mixupSwitchProb'] as const) assertFiniteNumber(k, o[k], { min: 0, max: 1 });
    if (typeof o.augment !== 'boolean') throw invalidTypeError('augment', 'boolean', o.augment);
    const [lo, hi] = Array.isArray(o.cropScale) ? o.cropScale : [NaN, NaN];
    if (!(lo > 0 && lo <= hi && hi <= 1)) throw invalidRangeError('cropScale', '[min, max] with 0 < min ≤ max ≤ 1', o.cropScale);
    if (typeof o.overwrite !== 'boolean') throw invalidTypeError('overwrite', 'boolean', o.overwrite);
    if (!Number.isSafeInteger(o.prefetch) || o.prefetch < 0) throw invalidParameterError('prefetch', 'non-negative integer', o.prefetch, 'number');
    if (!Number.isSafeInteger(o.seed) || o.seed < 0) throw invalidRangeError('seed', 'integer >= 0', o.seed);
    const mixing = o.mixupProb > 0 && (o.mixup > 0 || o.cutmix > 0);
    if (mixing && batchSize % 2 !== 0)
      throw invalidRangeError('batchSize', 'an even batch size with mixup/cutmix (each image is mixed with its partner in the reversed batch)', batchSize);
    this.#o = o;
    this.#model = model;
    this.#data = data;
    this.#classes = data instanceof ImageFolder ? [...data.classes] : undefined;
    this.#batches = new EpochBatches(data.count, batchSize, (epoch) => seededRng(o.seed, epoch));
    this.#mixup = mixing ? new Mixup({ numClasses: c.numClasses, mixupAlpha: o.mixup, cutmixAlpha: o.cutmix, prob: o.mixupProb,
      switchProb: o.mixupSwitchProb, labelSmoothing: c.labelSmoothing }) : undefined;
    this.#state = { step: 0, epoch: 0, position: 0, seed: o.seed, batchSize, runId: randomBytes(8).toString('hex'),
      ...(this.#classes ? { classes: this.#classes } : {}) };
  }

  get totalSteps(): number {
    return this.#o.epochs * this.#batches.batchesPerEpoch;
  }

  get step(): number {
    return this.#state.step;
  }

  /** Asks run() to stop after the step in progress (a checkpoint is written when there is an outDir). */
  stop(): void {
    this.#stopRequested = true;
  }

  /** Restores classifier, optimizer and loop state from a fine-tuning checkpoint (the newest in outDir if none given). */
  async resume(file?: string): Promise<void> {
    const target = file ?? (this.#o.outDir ? (await listCheckpoints(this.#o.outDir)).pop() : undefined);
    if (!target) throw new Error('resume: no checkpoint to resume from');
    if (this.#prepared) throw new Error('resume: this fine-tuner has already started its run');
    // the run's recipe is checked before anything is loaded: a refused resume leaves the model as it was
    const saved = await loadClassifierCheckpoint(target, this.#model, (state) => {
      const st = state as unknown as FinetuneState;
      if (st.seed !== this.#o.seed) throw new Error(`resume: the checkpoint was made with seed ${st.seed}, this run has ${this.#o.seed}`);
      if (st.batchSize !== this.#o.batchSize)
        throw new Error(`resume: the checkpoint was made with batch ${st.batchSize}, this run has ${this.#o.batchSize}; resume with the same batch size`);
      const diff = st.classes && this.#classes ? classesDifference(st.classes, 'the checkpoint\'s', this.#classes, 'this run\'s folder') : undefined;
      if (diff) throw new Error(`resume: the checkpoint was made on a folder with other classes than this run's: ${diff}`);
      assertDataCursor(`resume: ${target}`, st);
    }) as unknown as FinetuneState;
    this.#state = { ...saved, ...(this.#classes ? { classes: this.#classes } : {}) };
    this.#resumedFrom = target;
  }

  /** Trains to the last epoch; resolves with the last epoch's info. */
  async run(): Promise<FinetuneEpochInfo | undefined> {
    const o = this.#o, c = this.#model.config;
    const per = c.channels * c.imageSize * c.imageSize;
    const total = this.totalSteps;
    const baseLr = scaledLr(o.blr, o.batchSize);
    const warmupSteps = Math.round(o.warmupEpochs * this.#batches.batchesPerEpoch);
    await this.#prepare();
    let last: FinetuneEpochInfo | undefined;
    let epochStarted = performance.now();
    // batches started in order, the first being this step's; a folder's decode at once, `prefetch`
    // ahead of the one computed (in memory, a batch is copied when taken)
    const firstStep = this.#state.step;
    const queue = new BatchQueue(this.#batches, {
      from: this.#state, batches: Math.max(0, total - firstStep), prefetch: this.#data instanceof ImageFolder ? o.prefetch : 0,
      start: (indices, at) => this.#startBatch(indices, firstStep + at.ordinal, per),
    });
    queue.fill();
    const B = o.batchSize;
    while (this.#state.step < total) {
      const taken = queue.take();
      queue.fill();
      const epoch = taken.epoch;
      const batchSeed = this.#batchSeed(this.#state.step);
      const { images, labels } = await taken.loading();
      const lr = lrAt(this.#state.step, { baseLr, warmupSteps, totalSteps: total, minLr: o.minLr });
      const started = performance.now();
      let batch;
      if (this.#mixup) {
        const mixed = this.#mixup.apply(images, labels, B, c.channels, c.imageSize, batchSeed);
        batch = { images: mixed.images, targets: mixed.targets, batchSize: B };
      } else {
        batch = { images, labels, batchSize: B };
      }
      let r;
      try {
        r = await this.#model.trainStep(batch, { lr, weightDecay: o.weightDecay, layerDecay: o.layerDecay, clipGrad: o.clipGrad });
      } catch (err) {
        if ((err as { code?: string }).code === 'EMAE_NONFINITE_LOSS') {
          const kept = await this.#lastGoodCheckpoint();
          throw Object.assign(new Error(`fine-tuning stopped at step ${this.#state.step + 1}: ${(err as Error).message}` +
            (kept ? `; the last good checkpoint is ${kept}` : '')), { code: 'EMAE_NONFINITE_LOSS' });
        }
        throw err;
      }
      this.#state.step += 1;
      // the next epoch when no full batch is left
      const next = this.#batches.after(taken);
      this.#state.epoch = next.epoch;
      this.#state.position = next.position;
      this.#epochLoss.sum += r.loss;
      this.#epochLoss.count += 1;
      const info: FinetuneStepInfo = { step: this.#state.step, epoch, loss: r.loss, lr, gradNorm: r.gradNorm,
        imagesPerSecond: B / ((performance.now() - started) / 1000) };
      if (o.outDir) await appendFile(path.join(o.outDir, LOG_FILE), JSON.stringify(info) + '\n');
      await o.onStep?.(info);
      let saved = false;
      if (next.epoch > epoch) {
        const testTop1 = o.testData ? await top1Accuracy(this.#model, o.testData, o.evalBatchSize) : undefined;
        last = { epoch, step: this.#state.step, trainLoss: this.#epochLoss.sum / Math.max(1, this.#epochLoss.count),
          ...(testTop1 !== undefined ? { testTop1 } : {}), seconds: (performance.now() - epochStarted) / 1000 };
        this.#epochLoss = { sum: 0, count: 0 };
        epochStarted = performance.now();
        if (o.outDir) {
          await appendFile(path.join(o.outDir, LOG_FILE), JSON.stringify({ ...last, kind: 'epoch' }) + '\n');
          if ((epoch + 1) % o.checkpointEvery === 0 || this.#state.step === total) {
            await this.checkpoint();
            saved = true;
          }
        }
        await o.onEpoch?.(last);
      }
      if (this.#stopRequested && this.#state.step < total) {
        if (o.outDir && !saved) await this.checkpoint();
        break;
      }
    }
    return last;
  }

  /** Writes `ckpt-<step>.safetensors` to outDir, keeping this run's newest keepLast. */
  async checkpoint(): Promise<string> {
    if (!this.#o.outDir) throw new Error('checkpoint: the fine-tuner has no outDir');
    await this.#prepare();
    const file = path.join(this.#o.outDir, `ckpt-${this.#state.step}.safetensors`);
    const { onStep: _s, onEpoch: _e, testData: _t, outDir: _o, ...options } = this.#o;
    await saveClassifierCheckpoint(file, this.#model, { ...this.#state }, { finetune_options: JSON.stringify(options) });
    await pruneRunCheckpoints(this.#o.outDir, this.#o.keepLast, this.#state.runId);
    return file;
  }

  async #prepare(): Promise<void> {
    if (this.#prepared) return;
    const dir = this.#o.outDir;
    if (dir) await prepareRunFolder(dir, { overwrite: this.#o.overwrite, resumedFrom: this.#resumedFrom, step: this.#state.step });
    this.#prepared = true;
  }

  async #lastGoodCheckpoint(): Promise<string | undefined> {
    return this.#o.outDir ? newestRunCheckpoint(this.#o.outDir, this.#state.runId) : undefined;
  }

  /** The seed of step `step`'s augmentation and mixing: a resumed run draws the same. */
  #batchSeed(step: number): number {
    return (Math.imul(this.#o.seed + 1, 0x9e3779b1) ^ step) >>> 0;
  }

  // The augmented batch of `step` (`indices` of the dataset). A folder starts decoding now (each
  // image's crop and flip seeded by the step's seed and its index); in memory the images are
  // copied and augmented when taken.
  #startBatch(indices: Int32Array, step: number, per: number): () => Promise<{ images: Float32Array; labels: Int32Array }> {
    const o = this.#o, c = this.#model.config, B = o.batchSize, data = this.#data;
    const seed = this.#batchSeed(step);
    if (data instanceof ImageFolder) {
      const transform: FolderTransform = o.augment ? { crop: 'random', scale: o.cropScale } : { crop: 'center' };
      const loading = data.loadBatch(indices, seed, transform).then(({ images, labels }) => ({ images: this.#augmentMore(images, seed), labels }));
      loading.catch(() => {});  // awaited when its step comes; no unhandled rejection if the run stops first
      return () => loading;
    }
    return async () => {
      let images: Float32Array = new Float32Array(B * per);
      const labels = new Int32Array(B);
      for (let b = 0; b < B; b++) {
        const i = indices[b];
        images.set(data.images.subarray(i * per, (i + 1) * per), b * per);
        labels[b] = data.labels![i];
      }
      if (o.augment) images = augmentBatch(images, B, c.channels, c.imageSize, seed, { scale: [o.cropScale[0], o.cropScale[1]] });
      return { images: this.#augmentMore(images, seed), labels };
    };
  }

  // timm's order after crop and flip: RandAugment (on the PIL image, before normalization), then
  // random erasing (after it); both seeded by the step's seed, each on its own stream. Mixing
  // follows in run(). With both off the batch is returned as it is.
  #augmentMore(images: Float32Array, seed: number): Float32Array {
    const o = this.#o, c = this.#model.config, B = o.batchSize;
    if (o.randAugment) images = randAugment(images, B, c.channels, c.imageSize, o.randAugment, seed, o.normalization!).images;
    if (o.randomErasing) images = randomErasing(images, B, c.channels, c.imageSize, o.randomErasing, seed).images;
    return images;
  }
}

/**
 * The RandAugment, random erasing and normalization options checked: RandAugment's settings with
 * MAE's filling what is left out, and the normalization it un-normalizes with (the option, else
 * the data's); random erasing's settings, undefined when off.
 */
function augmentationSettings(options: FinetuneOptions, data: FinetuneData, channels: number) {
  const ra = options.randAugment ?? false;
  const randAugment = ra === false ? false as const : randAugmentSettings(ra);
  const re = options.randomErasing ?? 0;
  if (typeof re === 'number') assertFiniteNumber('randomErasing', re, { min: 0, max: 1 }, 'probability in [0, 1], or options');
  const randomErasing = typeof re === 'number' ? (re > 0 ? randomErasingSettings({ probability: re }) : undefined)
    : randomErasingSettings(re);
  let normalization: Normalization | undefined = options.normalization ?? data.normalization;
  if (options.normalization !== undefined) assertNormalization(options.normalization, channels);
  if (randAugment) {
    if (channels !== 1 && channels !== 3) throw invalidRangeError('randAugment', 'false for images of other than 1 or 3 channels (its colour ops work on grey or RGB)', ra);
    if (!normalization) {
      throw new RangeError('randAugment: the data does not say how its images were normalized (no normalization); ' +
        'give options.normalization { mean, std } so that RandAugment can work on the pixels');
    }
    assertNormalization(normalization, channels);
    normalization = { mean: [...normalization.mean], std: [...normalization.std] };
  } else {
    normalization = undefined;
  }
  return { randAugment, randomErasing: randomErasing && randomErasing.probability > 0 ? randomErasing : undefined, normalization };
}

/** A folder fit for fine-tuning `c`: images at its size in 3 channels, every one in a class sub-folder, one class per output. */
function checkFolder(name: string, f: ImageFolder, c: Classifier['config']): void {
  if (f.channels !== c.channels || f.size !== c.imageSize)
    throw new RangeError(`${name}: the folder ${f.root} loads images of ${f.channels} channel(s), ${f.size}×${f.size}, which do not fit the classifier's ${c.channels}, ${c.imageSize}×${c.imageSize}`);
  assertClassFolders(name, f);
  if (f.classes.length !== c.numClasses)
    throw new RangeError(`${name}: the folder ${f.root} has ${f.classes.length} class sub-folder(s) (${listClasses(f.classes)}) but the classifier has ${c.numClasses} classes`);
}

/**
 * Refuses a folder with images outside class sub-folders (label −1): fine-tuning reads
 * <root>/<class>/<image>. Exported for the CLI, which checks before it builds the classifier.
 */
export function assertClassFolders(name: string, f: ImageFolder): void {
  const unlabelled = f.labels.reduce((n, l) => n + (l < 0 ? 1 : 0), 0);
  if (unlabelled > 0) {
    const first = f.files[f.labels.findIndex((l) => l < 0)];
    throw new RangeError(`${name}: ${unlabelled} of the ${f.count} images of ${f.root} are not in a class sub-folder (${first})` +
      `${f.classes.length === 0 ? ' and it has no class sub-folders' : ''}; fine-tuning reads <root>/<class>/<image>, one sub-folder per class (torchvision's ImageFolder layout)`);
  }
}

function listClasses(classes: readonly string[]): string {
  return classes.length <= 8 ? classes.join(', ') : `${classes.slice(0, 8).join(', ')}, … ${classes.length - 8} more`;
}

/** How two class lists differ (names missing on either side, else the first position that differs), or undefined. */
function classesDifference(a: readonly string[], aName: string, b: readonly string[], bName: string): string | undefined {
  if (a.length === b.length && a.every((n, i) => n === b[i])) return undefined;
  const onlyA = a.filter((n) => !b.includes(n)), onlyB = b.filter((n) => !a.includes(n));
  const parts = [];
  if (onlyA.length > 0) parts.push(`only in ${aName}: ${listClasses(onlyA)}`);
  if (onlyB.length > 0) parts.push(`only in ${bName}: ${listClasses(onlyB)}`);
  if (parts.length > 0) return parts.join('; ');
  const i = a.findIndex((n, k) => n !== b[k]);
  return `the same names in another order (class ${i} is '${a[i]}' in ${aName}, '${b[i]}' in ${bName})`;
}

function checkLabelled(name: string, d: LabelledImageSet, c: Classifier['config']): void {
  assertObject(name, d, 'a LabelledImageSet (images, labels, count, channels, size)');
  const per = c.channels * c.imageSize * c.imageSize;
  if (!(d.images instanceof Float32Array)) throw invalidTypeError(`${name}.images`, 'Float32Array', d.images);
  if (!Number.isSafeInteger(d.count) || d.count < 1 || d.images.length < d.count * per)
    throw invalidRangeError(`${name}.count`, `a positive count with images.length ≥ count·${per}`, d.count);
  if (d.channels !== c.channels || d.size !== c.imageSize)
    throw new RangeError(`${name}: images of ${d.channels} channel(s), ${d.size}×${d.size} do not fit the classifier's ${c.channels}, ${c.imageSize}×${c.imageSize}`);
  if (!d.labels || d.labels.length < d.count) throw new RangeError(`${name}: fine-tuning needs a label for every image`);
  for (let i = 0; i < d.count; i++)
    if (d.labels[i] < 0 || d.labels[i] >= c.numClasses) throw new RangeError(`${name}.labels[${i}] = ${d.labels[i]} is not a class index in 0..${c.numClasses - 1}`);
}

/**
 * A fine-tuning checkpoint: the classifier's parameters and AdamW moments, the loop state, the
 * classifier config and a checksum, written atomically.
 */
export async function saveClassifierCheckpoint(file: string, model: Classifier, state: Record<string, unknown>,
  metadata: Record<string, string> = {}): Promise<void> {
  const params = await model.stateDict();
  const optimizer = await model.getOptimizerState();
  const tensors: Record<string, { data: Float32Array; shape: readonly number[] }> = {};
  for (const p of model.paramInfo()) {
    tensors[`param.${p.name}`] = { data: params[p.name], shape: p.shape };
    tensors[`exp_avg.${p.name}`] = { data: optimizer.expAvg[p.name], shape: p.shape };
    tensors[`exp_avg_sq.${p.name}`] = { data: optimizer.expAvgSq[p.name], shape: p.shape };
  }
  const config = JSON.stringify(model.config);
  await writeFileAtomic(file, writeSafetensors(tensors as Record<string, SafetensorsInput>, {
    ...metadata, format: CLASSIFIER_CHECKPOINT_FORMAT, optimizer_step: String(optimizer.step), trainer: JSON.stringify(state),
    [CLASSIFIER_CONFIG_KEY]: config, [CHECKSUM_KEY]: weightsChecksum(tensors, config),
  }));
}

/**
 * Verifies and loads a fine-tuning checkpoint into `model`; returns the loop state saved with it.
 * `accept` sees that state first and throws to refuse it: the model is then unchanged.
 */
export async function loadClassifierCheckpoint(file: string, model: Classifier,
  accept?: (state: Record<string, unknown>) => void): Promise<Record<string, unknown>> {
  const { metadata, data } = parseWeightsFile(await readFile(file), file, 'checkpoint');
  if (metadata.format !== CLASSIFIER_CHECKPOINT_FORMAT)
    throw new Error(`${file}: not an emae fine-tuning checkpoint (format '${metadata.format}', expected '${CLASSIFIER_CHECKPOINT_FORMAT}')`);
  // same-shaped tensors (another numHeads, pooling or eps) would load without complaint
  const saved = metadata[CLASSIFIER_CONFIG_KEY];
  const diff = saved === undefined ? undefined : classifierConfigDifference(saved, model.config, file);
  if (diff) throw new RangeError(`cannot resume from ${file}: it was saved for another classifier: ${diff}`);
  let state: Record<string, unknown>;
  try {
    state = JSON.parse(metadata.trainer ?? '');
  } catch {
    throw new Error(`${file}: the fine-tuning state is not valid JSON`);
  }
  accept?.(state);  // throws to refuse, before the model is touched
  const part = (prefix: string) => Object.fromEntries(Object.entries(data).filter(([n]) => n.startsWith(prefix))
    .map(([n, t]) => [n.slice(prefix.length), t.data as Float32Array]));
  const before = await model.stateDict();
  await model.loadStateDict(part('param.'));
  try {
    await model.setOptimizerState({ step: Number(metadata.optimizer_step), expAvg: part('exp_avg.'), expAvgSq: part('exp_avg_sq.') });
  } catch (err) {
    await model.loadStateDict(before);
    throw err;
  }
  return state;
}

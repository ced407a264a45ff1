// The fine-tuning loop: MAE's main_finetune.py recipe on an in-memory labelled set — lr = blr ·
// batch / 256, linear warm-up then half-cycle cosine to minLr per iteration, AdamW with layer-wise
// lr decay (Classifier.trainStep), random resized crop + flip, mixup/cutmix into soft targets
// (else label smoothing), drop path; top-1 on a test set after every epoch; a JSON-lines log,
// atomic checkpoints every epoch and an exact resume. Single process (data parallelism is the
// pretraining Trainer's; not here yet).
import { randomBytes } from 'node:crypto';
import { appendFile, mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { listCheckpoints } from './checkpoint.js';
import { CLASSIFIER_CONFIG_KEY, classifierConfigDifference, type Classifier } from './classifier.js';
import type { LabelledImageSet } from './data.js';
import { assertFiniteNumber, assertKnownKeys, assertObject, invalidRangeError, invalidTypeError } from './errors.js';
import { Mixup, augmentBatch } from './finetune-data.js';
import { seededRng } from './rng.js';
import { checkpointRunId, claimOutDir, outDirError, pruneRunCheckpoints, removeStaleTemporaries, truncateLog } from './run-folder.js';
import { writeFileAtomic, writeSafetensors, type SafetensorsInput } from './safetensors.js';
import { lrAt, scaledLr } from './schedule.js';
import { CHECKSUM_KEY, parseWeightsFile, weightsChecksum } from './weights-file.js';

export const CLASSIFIER_CHECKPOINT_FORMAT = 'emae-classifier-checkpoint/1';

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
  /** random resized crop and horizontal flip (default true) */
  augment?: boolean;
  /** area range of the random resized crop (default [0.08, 1], MAE's) */
  cropScale?: readonly [number, number];
  /** seed of the data order, augmentation and mixing (default 0); drop path uses the classifier's */
  seed?: number;
  /** scored (top-1) after every epoch */
  testData?: LabelledImageSet;
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
}

const OPTION_KEYS = ['batchSize', 'epochs', 'blr', 'minLr', 'warmupEpochs', 'weightDecay', 'layerDecay', 'clipGrad', 'mixup',
  'cutmix', 'mixupProb', 'mixupSwitchProb', 'augment', 'cropScale', 'seed', 'testData', 'evalBatchSize', 'outDir', 'overwrite',
  'checkpointEvery', 'keepLast', 'onStep', 'onEpoch'] as const;

/** Top-1 accuracy of `model` on a labelled set (whole images, no augmentation). */
export async function top1Accuracy(model: Classifier, data: LabelledImageSet, batchSize = 256): Promise<number> {
  if (!data.labels || data.labels.length < data.count) throw new RangeError('top1Accuracy: the data has no labels for every image');
  const logits = await model.predict(data.images.subarray(0, data.count * data.channels * data.size * data.size), { batchSize });
  const Q = model.config.numClasses;
  let correct = 0;
  for (let i = 0; i < data.count; i++) {
    let best = 0;
    for (let q = 1; q < Q; q++) if (logits[i * Q + q] > logits[i * Q + best]) best = q;
    if (best === data.labels[i]) correct++;
  }
  return correct / data.count;
}

export class FineTuner {
  readonly #model: Classifier;
  readonly #data: LabelledImageSet;
  readonly #o: Required<Omit<FinetuneOptions, 'testData' | 'outDir' | 'onStep' | 'onEpoch'>> & Pick<FinetuneOptions, 'testData' | 'outDir' | 'onStep' | 'onEpoch'>;
  readonly #stepsPerEpoch: number;
  readonly #mixup: Mixup | undefined;
  #state: FinetuneState;
  #stopRequested = false;
  #resumedFrom: string | undefined;
  #prepared = false;
  #epochLoss = { sum: 0, count: 0 };
  /** the current epoch's shuffled order (made once per epoch) */
  #order: { epoch: number; indices: Int32Array } | undefined;

  constructor(model: Classifier, data: LabelledImageSet, options: FinetuneOptions) {
    const c = model.config;
    assertObject('options', options, 'object with batchSize and epochs');
    assertKnownKeys('fine-tuning option', options, OPTION_KEYS);
    checkLabelled('data', data, c);
    if (options.testData !== undefined) checkLabelled('testData', options.testData, c);
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
      cropScale: options.cropScale ?? [0.08, 1] as const,
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
    if (!Number.isSafeInteger(o.seed) || o.seed < 0) throw invalidRangeError('seed', 'integer >= 0', o.seed);
    const mixing = o.mixupProb > 0 && (o.mixup > 0 || o.cutmix > 0);
    if (mixing && batchSize % 2 !== 0)
      throw invalidRangeError('batchSize', 'an even batch size with mixup/cutmix (each image is mixed with its partner in the reversed batch)', batchSize);
    this.#o = o;
    this.#model = model;
    this.#data = data;
    this.#stepsPerEpoch = Math.floor(data.count / batchSize);  // MAE's drop_last
    this.#mixup = mixing ? new Mixup({ numClasses: c.numClasses, mixupAlpha: o.mixup, cutmixAlpha: o.cutmix, prob: o.mixupProb,
      switchProb: o.mixupSwitchProb, labelSmoothing: c.labelSmoothing }) : undefined;
    this.#state = { step: 0, epoch: 0, position: 0, seed: o.seed, batchSize, runId: randomBytes(8).toString('hex') };
  }

  get totalSteps(): number {
    return this.#o.epochs * this.#stepsPerEpoch;
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
    const saved = await loadClassifierCheckpoint(target, this.#model) as unknown as FinetuneState;
    if (saved.seed !== this.#o.seed) throw new Error(`resume: the checkpoint was made with seed ${saved.seed}, this run has ${this.#o.seed}`);
    if (saved.batchSize !== this.#o.batchSize)
      throw new Error(`resume: the checkpoint was made with batch ${saved.batchSize}, this run has ${this.#o.batchSize}; resume with the same batch size`);
    this.#state = { ...saved };
    this.#resumedFrom = target;
  }

  /** Trains to the last epoch; resolves with the last epoch's info. */
  async run(): Promise<FinetuneEpochInfo | undefined> {
    const o = this.#o, c = this.#model.config;
    const per = c.channels * c.imageSize * c.imageSize;
    const total = this.totalSteps;
    const baseLr = scaledLr(o.blr, o.batchSize);
    const warmupSteps = Math.round(o.warmupEpochs * this.#stepsPerEpoch);
    await this.#prepare();
    let last: FinetuneEpochInfo | undefined;
    let epochStarted = performance.now();
    while (this.#state.step < total) {
      const { epoch, position } = this.#state;
      if (this.#order?.epoch !== epoch) this.#order = { epoch, indices: this.#epochOrder(epoch) };
      const order = this.#order.indices;
      const B = o.batchSize;
      let images: Float32Array = new Float32Array(B * per);
      const labels = new Int32Array(B);
      for (let b = 0; b < B; b++) {
        const i = order[position + b];
        images.set(this.#data.images.subarray(i * per, (i + 1) * per), b * per);
        labels[b] = this.#data.labels![i];
      }
      const batchSeed = (Math.imul(o.seed + 1, 0x9e3779b1) ^ this.#state.step) >>> 0;
      if (o.augment) images = augmentBatch(images, B, c.channels, c.imageSize, batchSeed, { scale: [o.cropScale[0], o.cropScale[1]] });
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
      this.#state.position += B;
      this.#epochLoss.sum += r.loss;
      this.#epochLoss.count += 1;
      const info: FinetuneStepInfo = { step: this.#state.step, epoch, loss: r.loss, lr, gradNorm: r.gradNorm,
        imagesPerSecond: B / ((performance.now() - started) / 1000) };
      if (o.outDir) await appendFile(path.join(o.outDir, 'log.jsonl'), JSON.stringify(info) + '\n');
      await o.onStep?.(info);
      const epochDone = this.#state.position + B > this.#data.count;
      let saved = false;
      if (epochDone) {
        this.#state.epoch += 1;
        this.#state.position = 0;
        const testTop1 = o.testData ? await top1Accuracy(this.#model, o.testData, o.evalBatchSize) : undefined;
        last = { epoch, step: this.#state.step, trainLoss: this.#epochLoss.sum / Math.max(1, this.#epochLoss.count),
          ...(testTop1 !== undefined ? { testTop1 } : {}), seconds: (performance.now() - epochStarted) / 1000 };
        this.#epochLoss = { sum: 0, count: 0 };
        epochStarted = performance.now();
        if (o.outDir) {
          await appendFile(path.join(o.outDir, 'log.jsonl'), JSON.stringify({ ...last, kind: 'epoch' }) + '\n');
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
    if (dir) {
      const continuing = this.#resumedFrom !== undefined && path.resolve(path.dirname(this.#resumedFrom)) === path.resolve(dir);
      if (continuing) {
        await removeStaleTemporaries(dir);
        await truncateLog(path.join(dir, 'log.jsonl'), this.#state.step);
      } else {
        await claimOutDir(dir, this.#o.overwrite);
      }
      try {
        await mkdir(dir, { recursive: true });
      } catch (err) {
        throw outDirError(dir, err as NodeJS.ErrnoException);
      }
    }
    this.#prepared = true;
  }

  async #lastGoodCheckpoint(): Promise<string | undefined> {
    if (!this.#o.outDir) return undefined;
    const all = await listCheckpoints(this.#o.outDir);
    for (let i = all.length - 1; i >= 0; i--) if ((await checkpointRunId(all[i])) === this.#state.runId) return all[i];
    return undefined;
  }

  /** The epoch's order: a seeded shuffle that depends only on (seed, epoch). */
  #epochOrder(epoch: number): Int32Array {
    const rng = seededRng(this.#o.seed, epoch);
    const order = Int32Array.from({ length: this.#data.count }, (_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = uniformInt(rng, 0, i);
      [order[i], order[j]] = [order[j], order[i]];
    }
    return order;
  }
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

/** Verifies and loads a fine-tuning checkpoint into `model`; returns the loop state saved with it. */
export async function loadClassifierCheckpoint(file: string, model: Classifier): Promise<Record<string, unknown>> {
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

// The pretraining loop: MAE's recipe (lr = blr·batch/256, linear warm-up, half-cycle cosine,
// AdamW with weight decay 0.05), the consistency weight from a given step, optional clipping,
// seeded epoch shuffling and parallel masks, a JSON-lines log, periodic atomic checkpoints and an
// exact resume: on the CPU the losses after a resume are bitwise those of an uninterrupted run.
import { randomBytes } from 'node:crypto';
import { appendFile } from 'node:fs/promises';
import path from 'node:path';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { BatchQueue, EpochBatches, assertDataCursor, type DataCursor } from './batch-cursor.js';
import { listCheckpoints, loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import { assertFiniteNumber, invalidParameterError, invalidRangeError, invalidTypeError } from './errors.js';
import { ParallelMasker } from './masker.js';
import { Distributed, isCollectiveError, ownFailure, peerFailure } from './distributed.js';
import type { EMAE } from './model.js';
import { LOG_FILE, newestRunCheckpoint, prepareRunFolder, pruneRunCheckpoints, type OutDirReport } from './run-folder.js';
import { lrAt, scaledLr } from './schedule.js';

/** Images held in memory: (count, C, H, W) with the model's C, H, W. */
export interface ImageSet {
  images: Float32Array;
  count: number;
}

/** Images produced on demand (e.g. decoded and augmented from files): (B, C, H, W) for the indices. */
export interface BatchSource {
  count: number;
  /** `seed` is fixed by the trainer for this batch, so augmentations repeat after a resume */
  load(indices: Int32Array, seed: number): Promise<Float32Array>;
}

const isBatchSource = (d: ImageSet | BatchSource): d is BatchSource => typeof (d as BatchSource).load === 'function';

export interface TrainerOptions {
  batchSize: number;
  /** total optimizer steps (or give `epochs`) */
  steps?: number;
  /** epochs instead of steps: steps = epochs · ⌊count / (batchSize · accumulate)⌋ */
  epochs?: number;
  /** micro-batches of batchSize accumulated per optimizer step (default 1); lr scales with batchSize · accumulate */
  accumulate?: number;
  /** base learning rate; lr = blr · batchSize / 256 (default 1.5e-4, MAE) */
  blr?: number;
  minLr?: number;
  /** linear warm-up steps (default 5% of steps) */
  warmupSteps?: number;
  weightDecay?: number;
  clipGrad?: number;
  /** λ once consistencyStart is reached (default: the model's consistencyWeight) */
  consistencyWeight?: number;
  /** step from which the consistency term is on (default 0) */
  consistencyStart?: number;
  /** seed of the data order and the masks (default 0) */
  seed?: number;
  /**
   * folder for log.jsonl and checkpoints; none: no files. A new run needs it missing or empty
   * (or `overwrite`); a resumed run continues in the folder of its checkpoint.
   */
  outDir?: string;
  /** start over in a non-empty outDir: its checkpoints, log.jsonl and curves are deleted (default false) */
  overwrite?: boolean;
  /** write a checkpoint every N steps (and at the end); 0: only at the end (default 0) */
  checkpointEvery?: number;
  /** checkpoints of this run to keep (default 3); other runs' files are never touched */
  keepLast?: number;
  /** called after each step */
  onStep?: (info: StepInfo) => void | Promise<void>;
  /** called when an epoch is complete (its number, 0-based) */
  onEpoch?: (epoch: number) => void | Promise<void>;
  /**
   * A data-parallel job from initDistributed(): batchSize is per rank (effective batch =
   * batchSize · accumulate · worldSize, and the lr scales with it); each rank takes its slice of
   * every global batch, gradients are averaged once per step; rank 0 writes log and checkpoints.
   */
  distributed?: Distributed;
  /**
   * batches of a BatchSource (e.g. an ImageFolder) loading while one is computed (default 2);
   * 0: each batch is loaded when it is needed. The batches are the same for any depth.
   */
  prefetch?: number;
}

export interface StepInfo {
  step: number;  // 1-based count of steps done
  epoch: number;
  loss: number;
  recon: number;
  consistency: number;
  lr: number;
  gradNorm: number;
  imagesPerSecond: number;
}

interface TrainerState {
  step: number;
  epoch: number;
  /** next position in the epoch's order, counted in samples of the global batch */
  position: number;
  seed: number;
  /** batchSize · worldSize: the masks and data order depend on it, the world size alone does not */
  globalBatch?: number;
  accumulate?: number;
  worldSize?: number;
  /** random id of the run, kept across resumes; pruning touches only checkpoints that carry it */
  runId: string;
}


export class Trainer {
  readonly #model: EMAE;
  readonly #data: ImageSet | BatchSource;
  readonly #opts: Required<Omit<TrainerOptions, 'outDir' | 'onStep' | 'onEpoch' | 'consistencyWeight' | 'epochs' | 'distributed' | 'overwrite'>> &
    Pick<TrainerOptions, 'outDir' | 'onStep' | 'onEpoch'> & { consistencyWeight: number };
  readonly #dist: Distributed | undefined;
  /** ranks in the job (1 without `distributed`) */
  readonly #world: number;
  readonly #masker: ParallelMasker;
  #state: TrainerState;
  /** the epochs' shuffled orders, read in global batches */
  readonly #batches: EpochBatches;
  #stopRequested = false;
  #stopAgreed = false;
  #resumedFrom: string | undefined;
  #outDirReport: OutDirReport | undefined;
  #writingCheckpoint = false;
  /** more than one rank: prepareOutDir() found the ranks agreeing (checked once) */
  #ranksAgreed = false;
  readonly #overwrite: boolean;

  constructor(model: EMAE, data: ImageSet | BatchSource, options: TrainerOptions) {
    const c = model.config;
    const per = c.channels * c.imageSize * c.imageSize;
    if (!data || typeof data !== 'object') throw invalidTypeError('data', 'an ImageSet or a BatchSource', data);
    if (!isBatchSource(data)) {
      if (!(data.images instanceof Float32Array)) throw invalidTypeError('data.images', 'Float32Array', data.images);
      if (!Number.isInteger(data.count) || data.count < 1 || data.images.length !== data.count * per)
        throw invalidRangeError('data.count', `a count with images.length = count·${per}`, data.count);
    } else if (!Number.isInteger(data.count) || data.count < 1) {
      throw invalidRangeError('data.count', 'positive integer', data.count);
    }
    const positiveInt = (name: string, v: unknown) => {
      if (!Number.isInteger(v) || (v as number) < 1) throw invalidRangeError(name, 'positive integer', v);
      return v as number;
    };
    const batchSize = positiveInt('batchSize', options.batchSize);
    if (options.distributed !== undefined && !(options.distributed instanceof Distributed))
      throw invalidTypeError('distributed', 'a Distributed from initDistributed()', options.distributed);
    const world = options.distributed?.worldSize ?? 1;
    if (batchSize * world > data.count)
      throw invalidRangeError('batchSize', `at most the dataset size ${data.count}` + (world > 1 ? ` divided by the world size ${world}` : ''), batchSize);
    const accumulate = positiveInt('accumulate', options.accumulate ?? 1);
    const prefetch = options.prefetch ?? 2;
    if (!Number.isSafeInteger(prefetch) || prefetch < 0) throw invalidParameterError('prefetch', 'non-negative integer', prefetch, 'number');
    if ((options.steps === undefined) === (options.epochs === undefined))
      throw invalidRangeError('steps/epochs', 'exactly one of steps and epochs', { steps: options.steps, epochs: options.epochs });
    const steps = options.steps !== undefined ? positiveInt('steps', options.steps)
      : positiveInt('epochs', options.epochs) * Math.max(1, Math.floor(data.count / (batchSize * accumulate * world)));
    const blr = options.blr ?? 1.5e-4;
    assertFiniteNumber('blr', blr, { above: 0 });
    if (scaledLr(blr, batchSize * accumulate * world) > 1)
      throw invalidRangeError('blr', `a base learning rate whose lr = blr·${batchSize * accumulate * world}/256 is at most 1`, blr);
    this.#opts = {
      batchSize, steps, accumulate, prefetch,
      blr,
      minLr: options.minLr ?? 0,
      warmupSteps: options.warmupSteps ?? Math.floor(steps / 20),
      weightDecay: options.weightDecay ?? 0.05,
      clipGrad: options.clipGrad ?? 0,
      consistencyWeight: options.consistencyWeight ?? c.consistencyWeight,
      consistencyStart: options.consistencyStart ?? 0,
      seed: options.seed ?? 0,
      checkpointEvery: options.checkpointEvery ?? 0,
      keepLast: options.keepLast ?? 3,
      outDir: options.outDir,
      onStep: options.onStep,
      onEpoch: options.onEpoch,
    };
    if (options.overwrite !== undefined && typeof options.overwrite !== 'boolean') throw invalidTypeError('overwrite', 'boolean', options.overwrite);
    this.#overwrite = options.overwrite ?? false;
    this.#model = model;
    this.#data = data;
    this.#dist = options.distributed;
    this.#world = world;
    this.#masker = ParallelMasker.fromConfig(c, this.#opts.seed);
    // a generator per epoch: the order depends only on (seed, epoch)
    this.#batches = new EpochBatches(data.count, batchSize * world, (epoch) => xoroshiro128plus((this.#opts.seed * 1_000_003 + epoch) | 0));
    this.#state = { step: 0, epoch: 0, position: 0, seed: this.#opts.seed, runId: newRunId(), ...this.#shape() };
  }

  /** Asks run() to stop after the step in progress, writing a checkpoint when there is an outDir. */
  stop(): void {
    this.#stopRequested = true;
  }

  /** Optimizer steps of the whole run. */
  get totalSteps(): number {
    return this.#opts.steps;
  }

  /** Steps done so far. */
  get step(): number {
    return this.#state.step;
  }

  /** True while a checkpoint is being written (a signal handler should let it finish). */
  get writingCheckpoint(): boolean {
    return this.#writingCheckpoint;
  }

  /** Restores model, optimizer and trainer state from a checkpoint (the newest in outDir if no file). */
  async resume(file?: string): Promise<void> {
    const target = file ?? (this.#opts.outDir ? (await listCheckpoints(this.#opts.outDir)).pop() : undefined);
    if (!target) throw new Error('resume: no checkpoint to resume from');
    if (this.#outDirReport) throw new Error('resume: this trainer has already started its run');
    const now = this.#shape();
    // checked before the checkpoint is written into the model, so a refused one changes nothing
    const saved = (await loadCheckpoint(target, this.#model, (trainer) => {
      const state = trainer as unknown as TrainerState;
      if (state.seed !== this.#opts.seed) throw new Error(`resume: the checkpoint was made with seed ${state.seed}, this trainer has ${this.#opts.seed}`);
      // Data order and masks depend on the global batch and accumulation, not on the world size,
      // so a checkpoint resumes on any number of ranks that keeps batchSize · worldSize.
      if (state.globalBatch !== undefined && (state.globalBatch !== now.globalBatch || (state.accumulate ?? 1) !== now.accumulate)) {
        const describe = (g: number, w: number, a: number) => `a global batch of ${g} (batch ${g / w} × ${w} rank${w > 1 ? 's' : ''}, accumulate ${a})`;
        throw new Error(`resume: the checkpoint was made with ${describe(state.globalBatch, state.worldSize ?? 1, state.accumulate ?? 1)}; ` +
          `this run has ${describe(now.globalBatch, now.worldSize, now.accumulate)}. Resume with the same batch · world size ` +
          `(e.g. batch ${state.globalBatch / now.worldSize} on ${now.worldSize} rank${now.worldSize > 1 ? 's' : ''}) and accumulate ${state.accumulate ?? 1}`);
      }
      assertDataCursor(`resume: ${target}`, state);
    })) as unknown as TrainerState;
    // checkpoints of older versions carry no run id: continue under a new one
    const runId = typeof saved.runId === 'string' ? saved.runId : newRunId();
    this.#state = { step: saved.step, epoch: saved.epoch, position: saved.position, seed: saved.seed, runId, ...now };
    this.#resumedFrom = target;
  }

  /**
   * Makes outDir ready for this run (run() calls it first; call it yourself to report what it did).
   * A new run, or a run resumed from a checkpoint in another folder, needs outDir missing or
   * empty, or `overwrite` (then the run files there are deleted); otherwise it throws (code
   * EMAE_OUT_NOT_EMPTY) before anything is written. A run resumed from a checkpoint in outDir
   * continues there: log.jsonl is cut back to the resumed step and interrupted writes are removed.
   * With `distributed`, only rank 0 touches the folder (the others return an empty report), and
   * every rank must call it (run() does): the ranks check here, in collectives, that they start
   * from the same state with the same options and that rank 0 could prepare the folder; if not,
   * every rank throws (rank 0 its own error, the others code EMAE_RANK_FAILED; see run()).
   */
  async prepareOutDir(): Promise<OutDirReport> {
    if (this.#world === 1) return this.#prepareFolder();
    let report: OutDirReport | undefined, failure: unknown;
    try {
      report = await this.#prepareFolder();
    } catch (err) {
      failure = err;
    }
    // every rank makes these collectives, whatever rank 0's folder did
    if (!this.#ranksAgreed) await this.#checkRanksAgree(failure);
    this.#ranksAgreed = true;
    return report!;
  }

  // This rank's part of prepareOutDir(): rank 0 readies the folder (once), the others nothing.
  async #prepareFolder(): Promise<OutDirReport> {
    if (this.#outDirReport) return this.#outDirReport;
    const dir = this.#opts.outDir;
    const report = dir && (this.#dist?.rank ?? 0) === 0
      ? await prepareRunFolder(dir, { overwrite: this.#overwrite, resumedFrom: this.#resumedFrom, step: this.#state.step })
      : { removed: [], logLinesDropped: 0 };
    this.#outDirReport = report;
    return report;
  }

  /**
   * Trains until `steps`; resolves with the last step's info. Stops with an error on a non-finite loss.
   * With `distributed`, a failure on one rank (a batch that does not load, an exception in the
   * step or in onEpoch/onStep, a log or checkpoint write of rank 0, outDir refused) stops every
   * rank at the same point: that rank throws its own error, its message prefixed `rank r of N: `,
   * the others an error with code EMAE_RANK_FAILED naming it ("rank 1 failed at step 3 (see its
   * error); rank 0 of 2 stopped too"); all carry `collective: true` and `failedRanks`, and no rank
   * is left waiting in a collective (isCollectiveError: no MPI_Abort is needed).
   */
  async run(): Promise<StepInfo | undefined> {
    const o = this.#opts, c = this.#model.config;
    const per = c.channels * c.imageSize * c.imageSize;
    const W = this.#world, rank = this.#dist?.rank ?? 0, main = rank === 0;
    // the data-parallel step (accumulate, all-reduce, apply): more than one rank, or one rank over NCCL
    const collective = W > 1 || this.#dist?.collectives === 'nccl';
    const baseLr = scaledLr(o.blr, o.batchSize * o.accumulate * W);  // MAE: the effective batch
    const outDir = main ? o.outDir : undefined;  // rank 0 writes the log and the checkpoints
    await this.prepareOutDir();  // more than one rank: the ranks' first collectives
    let last: StepInfo | undefined;
    // `prefetch` batches load while one is computed: started in order, none beyond the last step;
    // this rank takes its slice [rank·B, (rank+1)·B) of each global batch
    const queue = new BatchQueue(this.#batches, {
      from: this.#state, batches: Math.max(0, o.steps - this.#state.step) * o.accumulate, prefetch: o.prefetch,
      slice: { offset: rank * o.batchSize, size: o.batchSize }, start: (indices, at) => this.#startBatch(indices, at, per),
    });
    queue.fill();
    // More than one rank: every rank makes the same collectives in the same order, whatever
    // failed where — a failing rank never skips one the others are in, nor makes one they are
    // not in. The sequence is, per step, the losses all-reduce (#agree) then the gradient
    // all-reduce, and one more #agree after the loop. A failure of this rank between two of them
    // (loading, the step, onEpoch, AdamW, a write, onStep) is held in `failed` and this rank goes
    // straight to the next #agree (its step's, or the closing one: both are the same collective),
    // where every rank learns of it and every rank throws; nobody reaches the gradient all-reduce.
    let failed: HeldFailure | undefined;
    let stopping = false;
    while (this.#state.step < o.steps && !failed && !stopping) {
      const stepNo = this.#state.step + 1;
      const lr = lrAt(this.#state.step, { baseLr, warmupSteps: o.warmupSteps, totalSteps: o.steps, minLr: o.minLr });
      const consistencyWeight = this.#state.step >= o.consistencyStart ? o.consistencyWeight : 0;
      const started = performance.now();
      const optim = { lr, weightDecay: o.weightDecay, clipGrad: o.clipGrad };
      let r: { loss: number; recon: number; consistency: number; gradNorm: number } | undefined;
      const sums = { loss: 0, recon: 0, consistency: 0 };
      try {
        for (let micro = 0; micro < o.accumulate; micro++) {
          const batch = queue.take();
          const images = await batch.loading();
          if (batch.epoch > this.#state.epoch) await o.onEpoch?.(this.#state.epoch);
          this.#state.epoch = batch.epoch;
          this.#state.position = batch.next;
          const lastMicro = micro + 1 === o.accumulate;
          queue.fill();
          // masks keyed by the sample's place in the global stream: rank-invariant, resumable
          const sample = (this.#state.step * o.accumulate + micro) * o.batchSize * W + rank * o.batchSize;
          const permutation = this.#masker.forSamples(sample, o.batchSize);
          const input = { images, permutation, batchSize: o.batchSize };
          if (collective) {
            const m = await this.#model.accumulateGradients(input, { consistencyWeight, reset: micro === 0 });
            sums.loss += m.loss / o.accumulate;
            sums.recon += m.recon / o.accumulate;
            sums.consistency += m.consistency / o.accumulate;
            continue;
          }
          if (o.accumulate === 1) {
            const t = await this.#model.trainStep(input, { ...optim, consistencyWeight });
            r = { loss: t.loss, recon: t.recon, consistency: t.consistency, gradNorm: t.gradNorm };
            break;
          }
          const m = await this.#model.accumulateGradients(input, { consistencyWeight, reset: micro === 0 });
          if (!Number.isFinite(m.loss))
            throw Object.assign(new Error(`the loss is not finite (loss ${m.loss}); parameters and optimizer state were not updated`), { code: 'EMAE_NONFINITE_LOSS' });
          sums.loss += m.loss / o.accumulate;
          sums.recon += m.recon / o.accumulate;
          sums.consistency += m.consistency / o.accumulate;
          if (lastMicro) r = { ...sums, gradNorm: (await this.#model.applyGradients({ ...optim, gradScale: 1 / o.accumulate })).gradNorm };
        }
      } catch (err) {
        if (W === 1) throw await this.#nonFiniteStop(err);
        failed = { error: err, step: stepNo };  // the remaining micro-batches are skipped
      }
      if (collective) {
        let losses: { loss: number; recon: number; consistency: number };
        try {
          losses = await this.#reduce(sums, failed);  // throws on every rank if any rank failed
        } catch (err) {
          throw await this.#nonFiniteStop(err);
        }
        r = { ...losses, gradNorm: 0 };
      }
      // the step's collectives are done (or there were none): until the next #agree this rank's
      // failures are held
      try {
        if (collective) r!.gradNorm = (await this.#model.applyGradients({ ...optim, gradScale: 1 / (o.accumulate * W) })).gradNorm;
        this.#state.step += 1;
        last = {
          step: this.#state.step, epoch: this.#state.epoch, loss: r!.loss, recon: r!.recon, consistency: r!.consistency,
          lr, gradNorm: r!.gradNorm, imagesPerSecond: (o.batchSize * o.accumulate * W) / ((performance.now() - started) / 1000),
        };
        const due = o.checkpointEvery > 0 && this.#state.step % o.checkpointEvery === 0;
        if (outDir) {
          await this.#writing(`append step ${this.#state.step} to log.jsonl`, () => appendFile(path.join(outDir, LOG_FILE), JSON.stringify(last) + '\n'));
          if (due || this.#state.step === o.steps) await this.#writing(`write the checkpoint of step ${this.#state.step}`, () => this.checkpoint());
        }
        await o.onStep?.(last);  // after the checkpoint: a callback that stops the run loses nothing
        // more than one rank: the stop agreed in the step's all-reduce, so every rank stops together
        stopping = (W > 1 ? this.#stopAgreed : this.#stopRequested) && this.#state.step < o.steps;
        if (stopping && outDir && !due) await this.#writing(`write the checkpoint of step ${this.#state.step}`, () => this.checkpoint());
      } catch (err) {
        if (W === 1) throw err;
        failed = { error: err, step: stepNo };
      }
    }
    // the closing agreement: a failure after the last step's collectives reaches every rank
    if (W > 1) await this.#agree([0, 0, 0, 0], failed);
    return last;
  }

  /**
   * Writes `ckpt-<step>.safetensors` to outDir and keeps the newest keepLast of this run's
   * checkpoints (rank 0 only: other ranks write nothing).
   */
  async checkpoint(): Promise<string> {
    if (!this.#opts.outDir) throw new Error('checkpoint: the trainer has no outDir');
    await this.#prepareFolder();  // not prepareOutDir(): its collectives are for every rank, this may be rank 0 alone
    const file = path.join(this.#opts.outDir, `ckpt-${this.#state.step}.safetensors`);
    if ((this.#dist?.rank ?? 0) !== 0) return file;
    this.#writingCheckpoint = true;
    try {
      // the options too, so the file says how it was trained (readWeightsInfo(file).metadata.trainer_options)
      const { onStep: _s, onEpoch: _e, outDir: _o, ...options } = this.#opts;
      await saveCheckpoint(file, this.#model, { ...this.#state }, { trainer_options: JSON.stringify(options) });
    } finally {
      this.#writingCheckpoint = false;
    }
    await pruneRunCheckpoints(this.#opts.outDir, this.#opts.keepLast, this.#state.runId);
    return file;
  }

  // The newest checkpoint of this run in outDir (the one a --resume would take).
  async #lastGoodCheckpoint(): Promise<string | undefined> {
    return this.#opts.outDir ? newestRunCheckpoint(this.#opts.outDir, this.#state.runId) : undefined;
  }

  // A write to outDir; a failure (a full disk, a folder removed) stops the run with an error that
  // names the last good checkpoint, since the step's own checkpoint may be missing.
  async #writing<T>(what: string, write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (err) {
      const kept = await this.#lastGoodCheckpoint().catch(() => undefined);
      const e = err as NodeJS.ErrnoException;
      throw Object.assign(new Error(`training stopped at step ${this.#state.step}: could not ${what} (${e.message})` +
        (kept ? `; the last good checkpoint is ${kept}` : '; no checkpoint of this run was written')), { code: e.code, cause: err });
    }
  }

  // This rank's slice (`indices`) of the global batch at (epoch, position) of the epochs' orders
  // (positions count global samples). A BatchSource starts loading at once, seeded by the batch's
  // place so a resume repeats it (prefetch); in-memory images are copied when taken.
  #startBatch(indices: Int32Array, { epoch, position }: DataCursor, per: number): () => Promise<Float32Array> {
    const B = this.#opts.batchSize, data = this.#data;
    if (isBatchSource(data)) {
      let loading: Promise<Float32Array>;
      try {
        loading = Promise.resolve(data.load(indices, (this.#opts.seed * 31 + epoch) * 1_000_003 + position));
      } catch (err) {
        loading = Promise.reject(err);  // a load() that throws at once fails when its batch is awaited, as a rejection would
      }
      loading.catch(() => {});  // awaited in run(); no unhandled rejection if the run stops first
      return () => loading;
    }
    return async () => {
      const out = new Float32Array(B * per);
      for (let b = 0; b < B; b++) out.set(data.images.subarray(indices[b] * per, (indices[b] + 1) * per), b * per);
      return out;
    };
  }

  /** What the data order and masks depend on, recorded in checkpoints. */
  #shape(): { globalBatch: number; accumulate: number; worldSize: number } {
    return { globalBatch: this.#opts.batchSize * this.#world, accumulate: this.#opts.accumulate, worldSize: this.#world };
  }

  // The collective part of a step (more than one rank, or one over NCCL): the losses, the stop
  // flag and the failures are all-reduced first — a non-finite loss on any rank is then
  // non-finite on all, which all refuse together — then the gradients (summed in native memory);
  // run() then has every rank take the same AdamW step with the gradients scaled by
  // 1 / (accumulate · worldSize), i.e. averaged over the global batch.
  async #reduce(sums: { loss: number; recon: number; consistency: number }, failed: HeldFailure | undefined):
    Promise<{ loss: number; recon: number; consistency: number }> {
    const W = this.#world;
    const reduced = await this.#agree([sums.loss, sums.recon, sums.consistency, this.#stopRequested ? 1 : 0], failed);
    const losses = { loss: reduced[0] / W, recon: reduced[1] / W, consistency: reduced[2] / W };
    if (reduced[3] > 0) this.#stopAgreed = true;
    if (!Number.isFinite(losses.loss))
      throw Object.assign(new Error(`the loss is not finite on at least one rank (mean loss ${losses.loss}); parameters and optimizer state were not updated`),
        { code: 'EMAE_NONFINITE_LOSS', collective: true });
    await this.#dist!.allReduceGradients(this.#model, { average: false });
    return losses;
  }

  // The all-reduce every rank makes once per step and once after the last: [loss, recon,
  // consistency, stop, then one slot per rank], summed. A rank that failed sends zeros and the
  // step it failed at in its slot; when any slot is set every rank throws here — the failing
  // ranks their own errors, the others one naming them — so no rank goes on to a collective.
  async #agree(values: [number, number, number, number], failed: HeldFailure | undefined): Promise<Float64Array> {
    const dist = this.#dist!, W = this.#world;
    const mine = new Float64Array(4 + W);
    if (failed) mine[4 + dist.rank] = failed.step;
    else mine.set(values);
    const reduced = await dist.allReduce(mine, 'sum');
    const failedRanks = [...reduced.subarray(4).keys()].filter((r) => reduced[4 + r] > 0);
    if (failedRanks.length === 0) return reduced;
    if (failed) throw ownFailure(failed.error, dist, failedRanks);
    const steps = failedRanks.map((r) => reduced[4 + r]);
    const what = steps.every((s) => s === steps[0]) ? `${ranksNamed(failedRanks)} failed at step ${steps[0]}`
      : failedRanks.map((r, i) => `rank ${r} failed at step ${steps[i]}`).join(', ');
    const err = peerFailure(what, dist, failedRanks);
    const kept = dist.rank === 0 ? await this.#lastGoodCheckpoint().catch(() => undefined) : undefined;
    if (kept) err.message += `; the last good checkpoint is ${kept}`;
    throw err;
  }

  // A non-finite loss stops the run with an error naming the last good checkpoint; others pass.
  async #nonFiniteStop(err: unknown): Promise<unknown> {
    if ((err as { code?: string } | undefined)?.code !== 'EMAE_NONFINITE_LOSS') return err;
    const kept = await this.#lastGoodCheckpoint();
    return Object.assign(new Error(`training stopped at step ${this.#state.step + 1}: ${(err as Error).message}` +
      (kept ? `; the last good checkpoint is ${kept}` : '')),
    { code: 'EMAE_NONFINITE_LOSS', ...(isCollectiveError(err) ? { collective: true } : {}) });
  }

  // Every rank must run the same recipe from the same state; a mismatch (another seed, batch,
  // checkpoint or weights on one rank) would silently train garbage, so it is refused up front.
  // These two all-reduces are also where a rank that failed before them (rank 0 refusing outDir)
  // tells the others: every rank makes both, whatever failed where, and then all throw.
  async #checkRanksAgree(outDirFailure: unknown): Promise<void> {
    const o = this.#opts, st = this.#state, dist = this.#dist!, W = this.#world;
    let failure = outDirFailure, fingerprint = 0;
    if (failure === undefined) {
      try {
        const params = await this.#model.stateDict();
        for (const name of Object.keys(params).sort()) {
          const t = params[name];
          for (let i = 0; i < t.length; i += 97) fingerprint += t[i] * ((i % 7) + 1);
        }
      } catch (err) {
        failure = err;
      }
    }
    const mine = [o.batchSize, o.accumulate, o.steps, o.seed, st.step, st.epoch, st.position, this.#data.count, fingerprint];
    const names = ['batchSize', 'accumulate', 'steps', 'seed', 'step', 'epoch', 'position', 'data.count', 'parameters'];
    // then one slot per rank: 0 fine, 1 outDir refused, 2 failed otherwise (the max gives each)
    const slots = new Float64Array(W);
    if (failure !== undefined) slots[dist.rank] = outDirFailure !== undefined ? 1 : 2;
    const lo = await dist.allReduce(Float64Array.from([...mine, ...slots]), 'min');
    const hi = await dist.allReduce(Float64Array.from([...mine, ...slots]), 'max');
    const kinds = hi.subarray(names.length);
    const failedRanks = [...kinds.keys()].filter((r) => kinds[r] > 0);
    if (failedRanks.length > 0) {
      if (failure !== undefined) throw ownFailure(failure, dist, failedRanks);
      const refused = failedRanks.filter((r) => kinds[r] === 1), other = failedRanks.filter((r) => kinds[r] === 2);
      const what = [refused.length ? `${ranksNamed(refused)} refused the output folder ${o.outDir}` : '',
        other.length ? `${ranksNamed(other)} failed before the first step` : ''].filter(Boolean).join(' and ');
      throw peerFailure(what, dist, failedRanks);
    }
    const differ = names.filter((_, i) => lo[i] !== hi[i]);
    if (differ.length > 0)
      throw new Error(`the ranks of the job disagree on ${differ.join(', ')} (rank ${dist.rank} has ` +
        differ.map((n) => `${n} ${mine[names.indexOf(n)]}`).join(', ') + '); every rank must start from the same state with the same options');
  }

}

const newRunId = () => randomBytes(8).toString('hex');

/** A failure of this rank, held until the next collective every rank makes (Trainer.run). */
interface HeldFailure {
  error: unknown;
  /** the 1-based step it happened in (or after) */
  step: number;
}

/** "rank 1", "ranks 1 and 3", "ranks 0, 2 and 5" */
function ranksNamed(ranks: number[]): string {
  if (ranks.length === 1) return `rank ${ranks[0]}`;
  return `ranks ${ranks.slice(0, -1).join(', ')} and ${ranks[ranks.length - 1]}`;
}

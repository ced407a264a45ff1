// The order in which the training loops (Trainer, FineTuner) read their data: every epoch a
// seeded shuffle of the dataset, read in full batches from a cursor (epoch, position) — a partial
// batch at the end of an epoch is dropped (MAE's drop_last), so every batch is full — and the
// batches started in order ahead of the one computed (prefetch), so that a folder decodes while a
// step runs. Which batches come depends only on the shuffle, the batch size and the cursor, so a
// run resumed from a saved cursor repeats them, whatever the prefetch depth.
import type { uniformInt } from 'pure-rand/distribution/uniformInt';
import { shuffledRange } from './masker.js';

type RandomGenerator = Parameters<typeof uniformInt>[0];

/** A place in the data: the epoch and the next position in its order, counted in samples of the (global) batch. */
export interface DataCursor {
  epoch: number;
  position: number;
}

/**
 * Refuses a cursor that is no place in any data (a damaged or hand-edited checkpoint): epoch and
 * position must be non-negative integers. A position past the end is a place: no full batch is
 * left there, so the next batch is the next epoch's first.
 * @throws {RangeError} naming `what` and the bad field
 */
export function assertDataCursor(what: string, cursor: unknown): asserts cursor is DataCursor {
  const c = cursor as Partial<DataCursor> | null | undefined;
  for (const field of ['epoch', 'position'] as const) {
    const v = c?.[field];
    if (!Number.isSafeInteger(v) || (v as number) < 0)
      throw new RangeError(`${what}: the data cursor's ${field} must be a non-negative integer, but it is ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`);
  }
}

/**
 * A dataset of `count` samples read in epochs of full batches of `batchSize` (with more than one
 * rank, the global batch): the order of epoch e is a Fisher–Yates shuffle drawn from `shuffle(e)`,
 * a generator that depends only on the run's seed and e, so a resume needs no RNG state.
 */
export class EpochBatches {
  readonly count: number;
  readonly batchSize: number;
  readonly #shuffle: (epoch: number) => RandomGenerator;
  /** epoch → its order: the epochs in use (the current one and, prefetching, the next) */
  readonly #orders = new Map<number, Int32Array>();

  constructor(count: number, batchSize: number, shuffle: (epoch: number) => RandomGenerator) {
    if (!Number.isSafeInteger(count) || count < 1) throw new RangeError(`EpochBatches: count must be a positive integer, not ${count}`);
    if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > count)
      throw new RangeError(`EpochBatches: batchSize must be an integer in 1..${count}, not ${batchSize}`);
    this.count = count;
    this.batchSize = batchSize;
    this.#shuffle = shuffle;
  }

  /** Full batches in an epoch: the partial one at its end is dropped. */
  get batchesPerEpoch(): number {
    return Math.floor(this.count / this.batchSize);
  }

  /** Where the batch read at `at` starts: `at`, or the next epoch's start when no full batch is left there. */
  batchStart(at: DataCursor): DataCursor {
    return at.position + this.batchSize > this.count ? { epoch: at.epoch + 1, position: 0 } : { epoch: at.epoch, position: at.position };
  }

  /** The cursor after the batch that starts at `start` (a batchStart), moved on to the next epoch when no full batch is left. */
  after(start: DataCursor): DataCursor {
    return this.batchStart({ epoch: start.epoch, position: start.position + this.batchSize });
  }

  /**
   * The dataset indices of samples [offset, offset + size) of the batch that starts at `start` (a
   * batchStart; a rank takes its slice of the global batch). Batches are read in order, so the
   * orders of earlier epochs are let go.
   */
  indices(start: DataCursor, offset = 0, size = this.batchSize - offset): Int32Array {
    if (offset < 0 || size < 1 || offset + size > this.batchSize || start.position + this.batchSize > this.count)
      throw new RangeError(`EpochBatches: no samples [${offset}, ${offset + size}) of a batch of ${this.batchSize} at position ${start.position} of ${this.count}`);
    for (const e of this.#orders.keys()) if (e < start.epoch) this.#orders.delete(e);
    const first = start.position + offset;
    return this.order(start.epoch).slice(first, first + size);
  }

  /** The shuffled order of the dataset in `epoch` (kept while the epoch is in use). */
  order(epoch: number): Int32Array {
    let order = this.#orders.get(epoch);
    if (order) return order;
    order = new Int32Array(this.count);
    shuffledRange(order, this.#shuffle(epoch));
    this.#orders.set(epoch, order);
    return order;
  }
}

/** A batch the queue started: where it starts (after any move to the next epoch), the position after it, its place in the queue's run. */
export interface StartedBatch<T> {
  epoch: number;
  position: number;
  /** position + batchSize: where the next batch is read (it moves to the next epoch when no full batch is left) */
  next: number;
  /** 0 for the first batch this queue started, then 1, 2, … */
  ordinal: number;
  /** what `start` returned for it (its images, loading) */
  loading: T;
}

export interface BatchQueueOptions<T> {
  /** the cursor of the first batch */
  from: DataCursor;
  /** batches to start in all: none beyond the run's last step */
  batches: number;
  /** batches started ahead of the one taken (0: each started when taken) */
  prefetch: number;
  /** this rank's slice of each (global) batch; default all of it */
  slice?: { offset: number; size: number };
  /** starts loading a batch: its dataset indices and its place */
  start: (indices: Int32Array, batch: { epoch: number; position: number; ordinal: number }) => T;
}

/**
 * The batches of a run from a cursor on, started strictly in order: take() gives the next one
 * (started then if none is queued), fill() starts more until `prefetch` are queued. The caller
 * decides when to fill (the Trainer once the batch taken has loaded, the FineTuner before).
 */
export class BatchQueue<T> {
  readonly #batches: EpochBatches;
  readonly #o: BatchQueueOptions<T>;
  readonly #queued: StartedBatch<T>[] = [];
  /** where the next batch to start is read */
  #ahead: DataCursor;
  #started = 0;

  constructor(batches: EpochBatches, options: BatchQueueOptions<T>) {
    assertDataCursor('BatchQueue', options.from);
    if (!Number.isSafeInteger(options.batches) || options.batches < 0)
      throw new RangeError(`BatchQueue: batches must be a non-negative integer, not ${options.batches}`);
    if (!Number.isSafeInteger(options.prefetch) || options.prefetch < 0)
      throw new RangeError(`BatchQueue: prefetch must be a non-negative integer, not ${options.prefetch}`);
    this.#batches = batches;
    this.#o = options;
    this.#ahead = { epoch: options.from.epoch, position: options.from.position };
  }

  /** Batches started and not yet taken. */
  get queued(): number {
    return this.#queued.length;
  }

  /** Starts batches, in order, until `prefetch` are queued or every batch of the run is started. */
  fill(): void {
    while (this.#queued.length < this.#o.prefetch && this.#started < this.#o.batches) this.#queued.push(this.#startNext());
  }

  /** The next batch of the run: the oldest queued, or started now. */
  take(): StartedBatch<T> {
    const queued = this.#queued.shift();
    if (queued) return queued;
    if (this.#started >= this.#o.batches) throw new RangeError(`BatchQueue: all ${this.#o.batches} batches of the run were taken`);
    return this.#startNext();
  }

  #startNext(): StartedBatch<T> {
    const at = this.#batches.batchStart(this.#ahead), size = this.#batches.batchSize;
    const { offset, size: sliceSize } = this.#o.slice ?? { offset: 0, size };
    const ordinal = this.#started;
    const loading = this.#o.start(this.#batches.indices(at, offset, sliceSize), { ...at, ordinal });
    this.#started += 1;
    this.#ahead = { epoch: at.epoch, position: at.position + size };
    return { ...at, next: at.position + size, ordinal, loading };
  }
}

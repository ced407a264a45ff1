// The decode workers of an ImageFolder (workers ≥ 2): worker_threads running folder-worker.ts,
// fed one image at a time from a first-in first-out queue (a batch's images go out before the
// next batch's), at most PER_WORKER in flight on each. Which worker decodes which image does not
// change a bit of the result: the augmentation is seeded by (seed, index) alone.
//
// Workers are started at the first decode and are unref'd whenever they have nothing in flight,
// so an idle pool never keeps the process alive (a script that forgets dispose() still exits);
// close() waits for the decodes in flight — terminating a worker inside a libvips call can bring
// down the process — then terminates them.
import { Worker } from 'node:worker_threads';
import type { CropParams, DecodeOptions } from './decode.js';
import type { DecodeJob, DecodeResult } from './folder-worker.js';

/** Decodes posted to one worker at a time: enough to keep libuv's pool busy while its thread normalizes. */
const PER_WORKER = 2;

// dist/folder-worker.js once built; lib/folder-worker.ts when this runs from source under tsx (tests,
// benches): Node 20 does not apply the `--import=tsx` a worker inherits, so the worker registers
// tsx itself before importing its file (without tsx, the worker is left to the inherited flags)
const fromSource = import.meta.url.endsWith('.ts');
const newWorker = (workerData: DecodeOptions): Worker => {
  if (!fromSource) return new Worker(new URL('./folder-worker.js', import.meta.url), { workerData });
  const file = new URL('./folder-worker.ts', import.meta.url);
  let tsx: string;
  try {
    tsx = import.meta.resolve('tsx/esm/api');
  } catch {
    return new Worker(file, { workerData });
  }
  return new Worker(`import(${JSON.stringify(tsx)}).then((api) => { api.register(); return import(${JSON.stringify(file.href)}); })`,
    { eval: true, workerData });
};

interface Pending {
  job: DecodeJob;
  resolve: (r: Decoded | { reason: string }) => void;
  reject: (err: Error) => void;
}

/** A decoded image: its pixels, the crop drawn, its oriented size. */
export interface Decoded {
  pixels: Float32Array;
  crop: CropParams;
  width: number;
  height: number;
}

interface Slot {
  worker: Worker;
  inFlight: Map<number, Pending>;
}

export class DecodePool {
  readonly size: number;
  readonly #options: DecodeOptions;
  #slots: Slot[] | undefined;
  readonly #queue: Pending[] = [];
  #nextId = 0;
  #closed = false;
  /** a worker that died: every later decode fails with this */
  #broken: Error | undefined;
  #drained: (() => void) | undefined;

  constructor(size: number, options: DecodeOptions) {
    this.size = size;
    this.#options = options;
  }

  /**
   * The image, or sharp's reason when the file does not decode; `known`: its oriented size, if
   * read before; `override`: crop or scale for this image instead of the pool's.
   */
  decode(file: string, index: number, seed: number, known = { width: 0, height: 0 },
    override?: DecodeJob['override']): Promise<Decoded | { reason: string }> {
    if (this.#closed) return Promise.reject(new Error('ImageFolder: the folder was disposed'));
    if (this.#broken) return Promise.reject(this.#broken);
    return new Promise((resolve, reject) => {
      this.#queue.push({ job: { id: this.#nextId++, file, index, seed, width: known.width, height: known.height, ...(override ? { override } : {}) }, resolve, reject });
      this.#pump();
    });
  }

  /** Stops taking decodes, lets those in flight finish, then ends the workers. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const disposed = new Error('ImageFolder: the folder was disposed');
    for (const p of this.#queue.splice(0)) p.reject(disposed);
    if (this.#slots?.some((s) => s.inFlight.size > 0)) await new Promise<void>((resolve) => { this.#drained = resolve; });
    await Promise.all((this.#slots ?? []).map((s) => s.worker.terminate()));
    this.#slots = [];
  }

  #start(): Slot[] {
    return Array.from({ length: this.size }, () => {
      const slot: Slot = { worker: newWorker(this.#options), inFlight: new Map() };
      slot.worker.unref();
      slot.worker.on('message', (r: DecodeResult) => {
        const p = slot.inFlight.get(r.id);
        if (!p) return;
        slot.inFlight.delete(r.id);
        if (slot.inFlight.size === 0) slot.worker.unref();
        p.resolve(r.ok ? { pixels: r.pixels, crop: r.crop, width: r.width, height: r.height } : { reason: r.reason });
        this.#pump();
      });
      const died = (err: Error) => {
        this.#broken ??= err;
        for (const p of slot.inFlight.values()) p.reject(err);
        slot.inFlight.clear();
        slot.worker.unref();
        if (!this.#closed) for (const p of this.#queue.splice(0)) p.reject(err);
        this.#pump();
      };
      slot.worker.on('error', (err) => died(new Error(`ImageFolder: a decode worker failed: ${err.message}`, { cause: err })));
      slot.worker.on('exit', (code) => {
        if (!this.#closed) died(new Error(`ImageFolder: a decode worker exited (code ${code})`));
      });
      return slot;
    });
  }

  #pump(): void {
    if (this.#closed || this.#broken) {
      if (this.#closed && this.#drained && !this.#slots?.some((s) => s.inFlight.size > 0)) this.#drained();
      return;
    }
    this.#slots ??= this.#start();
    while (this.#queue.length > 0) {
      // the least busy worker (the first of equals)
      let slot: Slot | undefined;
      for (const s of this.#slots) if (s.inFlight.size < PER_WORKER && (!slot || s.inFlight.size < slot.inFlight.size)) slot = s;
      if (!slot) return;
      const p = this.#queue.shift()!;
      if (slot.inFlight.size === 0) slot.worker.ref();
      slot.inFlight.set(p.job.id, p);
      slot.worker.postMessage(p.job);
    }
  }
}

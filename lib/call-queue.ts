// Shared by the native-model handles (EMAE, Classifier): the per-model call queue that keeps
// native calls one at a time in call order, and the check of a state dict against a model's
// parameter list before anything is written.
import {
  assertKnownKeys, assertNonNegativeInteger, assertObject, describeValue, invalidTypeError, isFloat32Array, withCallerStack,
} from './errors.js';
import type { OptimizerState } from './model.js';

export const shapeText = (shape: readonly number[]): string => `[${shape.join(',')}]`;
export const product = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

const MAX_LISTED_PROBLEMS = 8;

/**
 * Calls on one native model run one at a time, in call order: the native step runs off the JS
 * thread and reads/writes the parameters, so a stateDict() or a second step must not overlap it.
 */
export class CallQueue {
  /** settles when every call so far has finished */
  #tail: Promise<unknown> = Promise.resolve();
  /** calls started or waiting */
  #pending = 0;
  readonly #assertAlive: () => void;

  /** `assertAlive` runs when a call starts (it throws once the model is disposed). */
  constructor(assertAlive: () => void) {
    this.#assertAlive = assertAlive;
  }

  /** Calls started or waiting: a caller's arrays must be copied when this is not 0. */
  get pending(): number {
    return this.#pending;
  }

  /**
   * Runs `fn` after every earlier call has settled, immediately (synchronously) when none is
   * pending. Native rejections get the caller's stack (`context`).
   */
  run<T>(context: Error, fn: () => T | Promise<T>): Promise<T> {
    const start = (): T | Promise<T> => {
      this.#assertAlive();
      return fn();
    };
    let run: Promise<T>;
    if (this.#pending === 0) {
      try {
        run = Promise.resolve(start());
      } catch (err) {
        run = Promise.reject(err);
      }
    } else {
      run = this.#tail.then(start);
    }
    this.#pending++;
    const settled = run.finally(() => { this.#pending--; });
    this.#tail = settled.catch(() => undefined);
    return settled.catch((err: unknown) => { throw withCallerStack(err, context); });
  }

  /** Runs `fn` (the disposal) once every earlier call has settled, without the alive check. */
  last(fn: () => void): Promise<void> {
    const done = this.#tail.then(fn);
    this.#tail = done.catch(() => undefined);
    return done;
  }

  /** Settles when every call so far has. */
  settled(): Promise<void> {
    return this.#tail.then(() => undefined);
  }

  #closed = false;

  /** True once close() was called (the model is disposed). */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Disposal: runs `free` once every call made so far has settled; later calls are refused by
   * the alive check. Calling it again only waits.
   */
  close(free: () => void): Promise<void> {
    if (this.#closed) return this.settled();
    this.#closed = true;
    return this.last(free);
  }
}

/** A model parameter as checkTensors sees it. */
export interface ParamShape {
  name: string;
  shape: readonly number[];
}

function describeSource(source: string): string {
  return source === 'state dict' ? 'state dict' : 'file';
}

/**
 * Checks tensors against a model's parameters: kind (F32), shape, missing and unexpected names.
 * Returns the Float32Array per parameter (missing ones, when not strict, absent). All problems
 * are listed; the error's class is that of the first.
 */
export function checkTensors(
  params: readonly ParamShape[],
  tensors: Record<string, { data: unknown; shape?: readonly number[]; dtype?: string }>,
  strict: boolean,
  source: string,
): Record<string, Float32Array> {
  const problems: Array<TypeError | RangeError> = [];
  const out: Record<string, Float32Array> = {};
  const known = new Set(params.map((p) => p.name));
  for (const p of params) {
    const t = Object.hasOwn(tensors, p.name) ? tensors[p.name] : undefined;
    if (t === undefined || t.data === undefined) {
      if (strict) problems.push(new RangeError(`${p.name}: missing from the ${describeSource(source)} (expected shape ${shapeText(p.shape)})`));
      continue;
    }
    if (t.dtype !== undefined && t.dtype !== 'F32') {
      problems.push(new TypeError(`${p.name}: expected dtype F32 but the file has ${t.dtype}`));
      continue;
    }
    if (!isFloat32Array(t.data)) {
      problems.push(invalidTypeError(p.name, 'Float32Array', t.data));
      continue;
    }
    if (t.shape !== undefined) {
      if (!Array.isArray(t.shape) || t.shape.length !== p.shape.length || t.shape.some((d, i) => d !== p.shape[i])) {
        const has = Array.isArray(t.shape) ? shapeText(t.shape) : describeValue(t.shape);
        problems.push(new RangeError(`${p.name}: expected shape ${shapeText(p.shape)} but the ${describeSource(source)} has ${has}`));
        continue;
      }
      if (t.data.length !== product(p.shape)) {
        problems.push(new RangeError(`${p.name}: shape ${shapeText(p.shape)} needs ${product(p.shape)} elements but the data has ${t.data.length}`));
        continue;
      }
    } else if (t.data.length !== product(p.shape)) {
      problems.push(new RangeError(`${p.name}: expected ${product(p.shape)} elements (shape ${shapeText(p.shape)}) ` +
        `but received Float32Array(${t.data.length})`));
      continue;
    }
    out[p.name] = t.data;
  }
  if (strict) {
    for (const name of Object.keys(tensors)) {
      if (!known.has(name)) problems.push(new RangeError(`${name}: unexpected tensor in the ${describeSource(source)} (not a parameter of this model; pass { strict: false } to ignore it)`));
    }
  }
  if (problems.length > 0) {
    const first = problems[0];
    const listed = problems.slice(0, MAX_LISTED_PROBLEMS).map((e) => e.message);
    const more = problems.length > MAX_LISTED_PROBLEMS ? `; and ${problems.length - MAX_LISTED_PROBLEMS} more` : '';
    const ErrorClass = first instanceof TypeError ? TypeError : RangeError;
    throw new ErrorClass(`cannot load ${source === 'state dict' ? 'the state dict' : source}: ${listed.join('; ')}${more}`);
  }
  return out;
}

/**
 * Checks AdamW state against the parameters that have moments: step, both moment maps, every
 * name present with its size, no unknown name. Returns a copy of the maps (the caller's arrays).
 */
export function checkOptimizerState(params: readonly ParamShape[], state: OptimizerState): OptimizerState {
  assertObject('optimizer state', state, 'object with step, expAvg, expAvgSq');
  assertKnownKeys('optimizer state key', state, ['step', 'expAvg', 'expAvgSq']);
  assertNonNegativeInteger('step', state.step);
  const copy: OptimizerState = { step: state.step, expAvg: {}, expAvgSq: {} };
  const names = new Set(params.map((p) => p.name));
  for (const key of ['expAvg', 'expAvgSq'] as const) {
    const moments = state[key];
    assertObject(key, moments, 'object mapping trainable parameter names to Float32Array');
    for (const p of params) {
      const m = moments[p.name];
      if (m === undefined) throw new RangeError(`${key}.${p.name}: missing from the optimizer state`);
      if (!isFloat32Array(m)) throw invalidTypeError(`${key}.${p.name}`, 'Float32Array', m);
      const want = product(p.shape);
      if (m.length !== want) throw new RangeError(`${key}.${p.name}: expected ${want} elements (shape ${shapeText(p.shape)}) but received ${m.length}`);
      copy[key][p.name] = m;
    }
    const extra = Object.keys(moments).find((n) => !names.has(n));
    if (extra !== undefined) throw new RangeError(`${key}.${extra}: not a trainable parameter of this model`);
  }
  return copy;
}

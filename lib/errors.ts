// One error shape for every bad argument, after sharp's lib/is.mjs:
//   "Expected positive integer for patchSize but received 0"
// TypeError when the value has the wrong type, RangeError when the type is right but the value
// or size is not (DESIGN §4). The checks below are one-line predicates plus assertions that
// throw that shape, so every public entry point validates the same way.
import { types } from 'node:util';

const MAX_STRING = 40;

/** A short, readable rendering of any value for an error message. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (value === null) return 'null';
  switch (typeof value) {
    case 'number':
      return Object.is(value, -0) ? '-0' : String(value);
    case 'bigint':
      return `${value}n (bigint)`;
    case 'boolean':
      return String(value);
    case 'string': {
      const s = value.length > MAX_STRING ? `${value.slice(0, MAX_STRING)}…` : value;
      return JSON.stringify(s);
    }
    case 'symbol':
      return value.toString();
    case 'function':
      return `function ${value.name || '(anonymous)'}`;
    default:
      break;
  }
  if (ArrayBuffer.isView(value)) {
    const name = value.constructor?.name ?? 'ArrayBufferView';
    const length = 'length' in value ? (value as { length: number }).length : value.byteLength;
    return `${name}(${length})`;
  }
  if (Array.isArray(value)) return `array of length ${value.length}`;
  const ctor = (value as object).constructor;
  return ctor && ctor !== Object && typeof ctor.name === 'string' && ctor.name ? `${ctor.name} object` : 'object';
}

function message(name: string, expected: string, actual: unknown): string {
  return `Expected ${expected} for ${name} but received ${describeValue(actual)}`;
}

/** Wrong type: "Expected Float32Array for images but received Float64Array(12)". */
export function invalidTypeError(name: string, expected: string, actual: unknown): TypeError {
  return new TypeError(message(name, expected, actual));
}

/** Right type, bad value or size: "Expected positive integer for patchSize but received 0". */
export function invalidRangeError(name: string, expected: string, actual: unknown): RangeError {
  return new RangeError(message(name, expected, actual));
}

/**
 * sharp's `invalidParameterError(name, expected, actual)`: a TypeError when `actual` is not of
 * `jsType` (the `typeof` the parameter needs), otherwise a RangeError.
 */
export function invalidParameterError(
  name: string, expected: string, actual: unknown, jsType: 'number' | 'string' | 'boolean' | 'object',
): TypeError | RangeError {
  const sameType = jsType === 'object' ? isObject(actual) : typeof actual === jsType;
  return sameType ? invalidRangeError(name, expected, actual) : invalidTypeError(name, expected, actual);
}

// ---- predicates -----------------------------------------------------------------------------

export const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v);
export const isNumber = (v: unknown): v is number => typeof v === 'number';
export const isFiniteNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
export const isPositiveInteger = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;
export const isNonNegativeInteger = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
/** Realm-independent typed-array checks (a Float32Array from a vm context or worker still counts). */
export const isFloat32Array = (v: unknown): v is Float32Array => types.isFloat32Array(v);
export const isInt32Array = (v: unknown): v is Int32Array => types.isInt32Array(v);
export const isFloat64Array = (v: unknown): v is Float64Array => types.isFloat64Array(v);

// ---- assertions -----------------------------------------------------------------------------

export function assertObject(name: string, v: unknown, expected = 'object'): asserts v is Record<string, unknown> {
  if (!isObject(v)) throw invalidTypeError(name, expected, v);
}

export function assertPositiveInteger(name: string, v: unknown): asserts v is number {
  if (typeof v !== 'number') throw invalidTypeError(name, 'positive integer', v);
  if (!isPositiveInteger(v)) throw invalidRangeError(name, 'positive integer', v);
}

export function assertNonNegativeInteger(name: string, v: unknown): asserts v is number {
  if (typeof v !== 'number') throw invalidTypeError(name, 'non-negative integer', v);
  if (!isNonNegativeInteger(v)) throw invalidRangeError(name, 'non-negative integer', v);
}

export interface NumberBounds {
  /** inclusive lower bound */
  min?: number;
  /** exclusive lower bound */
  above?: number;
  /** exclusive upper bound */
  below?: number;
  /** inclusive upper bound */
  max?: number;
}

/** Finite number within the bounds; the expected text is built from the bounds when not given. */
export function assertFiniteNumber(name: string, v: unknown, bounds: NumberBounds = {}, expected?: string): asserts v is number {
  const text = expected ?? describeBounds(bounds);
  if (typeof v !== 'number') throw invalidTypeError(name, text, v);
  if (!Number.isFinite(v)
    || (bounds.min !== undefined && v < bounds.min)
    || (bounds.above !== undefined && v <= bounds.above)
    || (bounds.below !== undefined && v >= bounds.below)
    || (bounds.max !== undefined && v > bounds.max)) {
    throw invalidRangeError(name, text, v);
  }
}

function describeBounds(b: NumberBounds): string {
  if (b.min === 0 && b.below === undefined && b.max === undefined && b.above === undefined) return 'finite number >= 0';
  if (b.above === 0 && b.below === undefined && b.max === undefined && b.min === undefined) return 'finite number > 0';
  const lo = b.above !== undefined ? `(${b.above}` : b.min !== undefined ? `[${b.min}` : '(-inf';
  const hi = b.below !== undefined ? `${b.below})` : b.max !== undefined ? `${b.max}]` : 'inf)';
  return `finite number in ${lo}, ${hi}`;
}

export function assertBoolean(name: string, v: unknown): asserts v is boolean {
  if (typeof v !== 'boolean') throw invalidTypeError(name, 'boolean', v);
}

export function assertString(name: string, v: unknown, expected = 'non-empty string'): asserts v is string {
  if (typeof v !== 'string') throw invalidTypeError(name, expected, v);
  if (v.length === 0) throw invalidRangeError(name, expected, v);
}

/** Rejects keys of an options object that are not in `allowed`, suggesting the camelCase spelling. */
export function assertKnownKeys(what: string, obj: Record<string, unknown>, allowed: readonly string[]): void {
  for (const key of Object.keys(obj)) {
    if (allowed.includes(key)) continue;
    throw new TypeError(unknownKeyMessage(what, key, allowed));
  }
}

export function unknownKeyMessage(what: string, key: string, allowed: readonly string[]): string {
  const camel = key.replace(/[_-]+([a-z0-9])/gi, (_m, c: string) => c.toUpperCase());
  const lower = key.toLowerCase();
  const hint = allowed.find((k) => k === camel || k.toLowerCase() === lower || k.toLowerCase() === camel.toLowerCase());
  return `Unknown ${what} ${JSON.stringify(key)}` +
    (hint ? `; did you mean ${JSON.stringify(hint)}?` : `; expected one of ${allowed.join(', ')}`);
}

// ---- native errors --------------------------------------------------------------------------

/**
 * Gives an error coming back from the native side the stack captured when the user called in
 * (`context = new Error()` at the start of the public method), as sharp does, so the trace
 * points at user code instead of an empty async frame. The error object itself (class, message,
 * any extra fields) is kept.
 */
export function withCallerStack(err: unknown, context: Error): unknown {
  if (!(err instanceof Error) || typeof context.stack !== 'string') return err;
  const nl = context.stack.indexOf('\n');
  if (nl < 0) return err;
  try {
    err.stack = `${err.name}: ${err.message}${context.stack.slice(nl)}`;
  } catch {
    // a frozen error keeps its own stack
  }
  return err;
}

export const DISPOSED_MESSAGE = 'EMAE model has been disposed';

// safetensors (https://github.com/huggingface/safetensors), the weights format of DESIGN §3:
//   8 bytes little-endian u64 n | n bytes of JSON header | data
// The header maps each tensor name to { dtype, shape, data_offsets: [begin, end] } (offsets
// relative to the data section) plus an optional "__metadata__" string map. The reader is as
// strict as the reference Rust crate: bounded header, valid UTF-8 JSON, offsets in range,
// tensors contiguous and non-overlapping and covering the whole data section, and each byte size
// equal to product(shape)·itemsize. Tensor data is copied into fresh (aligned) typed arrays.
import { open, rename, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { describeValue, invalidTypeError, isFloat32Array, isFloat64Array, isInt32Array, isObject } from './errors.js';

export type SafetensorsDType = 'F32' | 'I32' | 'F64';
export type SafetensorsData = Float32Array | Int32Array | Float64Array;

export interface SafetensorsTensor {
  dtype: SafetensorsDType;
  shape: number[];
  data: SafetensorsData;
}

export interface SafetensorsFile {
  tensors: Record<string, SafetensorsTensor>;
  metadata: Record<string, string>;
}

/** A tensor to write: a typed array with its shape (a bare typed array is written 1-D). */
export type SafetensorsInput = SafetensorsData | { data: SafetensorsData; shape: readonly number[] };

/** Same bound as the Rust crate (MAX_HEADER_SIZE). */
export const MAX_HEADER_BYTES = 100_000_000;

const ITEM_SIZE: Record<SafetensorsDType, number> = { F32: 4, I32: 4, F64: 8 };
/** Every dtype the format defines, so an unsupported one gets "not supported" rather than "unknown". */
const KNOWN_DTYPES = new Set(['BOOL', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'F8_E8M0', 'F4', 'F6_E2M3', 'F6_E3M2',
  'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'F64', 'I64', 'U64', 'C64']);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function corrupt(msg: string): RangeError {
  return new RangeError(`invalid safetensors data: ${msg}`);
}

/**
 * Parses safetensors bytes.
 * @throws {TypeError} buf is not a Uint8Array
 * @throws {RangeError} corrupt or unsupported content; the message names the tensor at fault
 */
export function readSafetensors(buf: Uint8Array): SafetensorsFile {
  if (!(buf instanceof Uint8Array)) throw invalidTypeError('buf', 'Uint8Array (or Buffer)', buf);
  if (buf.length < 8) throw corrupt(`truncated: ${buf.length} bytes, the 8-byte header length alone needs 8`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const headerLen = view.getBigUint64(0, true);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) {
    throw corrupt(`header length ${headerLen} exceeds the limit of ${MAX_HEADER_BYTES} bytes`);
  }
  const n = Number(headerLen);
  if (8 + n > buf.length) {
    throw corrupt(`truncated: the header length says ${n} bytes but only ${buf.length - 8} follow it`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(8, 8 + n));
  } catch {
    throw corrupt('the header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (err) {
    throw corrupt(`the header is not valid JSON (${(err as Error).message})`);
  }
  if (!isObject(header)) throw corrupt(`the header must be a JSON object, not ${describeValue(header)}`);

  const dataStart = 8 + n;
  const dataLen = buf.length - dataStart;
  let metadata: Record<string, string> = {};
  const entries: Array<{ name: string; dtype: SafetensorsDType; shape: number[]; begin: number; end: number }> = [];

  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(info);
      continue;
    }
    const where = `tensor ${JSON.stringify(name)}`;
    if (!isObject(info)) throw corrupt(`${where}: expected an object with dtype, shape, data_offsets`);
    const { dtype, shape, data_offsets: offsets } = info;
    if (typeof dtype !== 'string') throw corrupt(`${where}: dtype must be a string, not ${describeValue(dtype)}`);
    if (!(dtype in ITEM_SIZE)) {
      throw corrupt(`${where} has dtype ${dtype}, ` + (KNOWN_DTYPES.has(dtype) ? 'which emae does not read' : 'an unknown dtype') +
        ' (supported: F32, I32, F64)');
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw corrupt(`${where}: shape must be an array of non-negative integers, not ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw corrupt(`${where}: data_offsets must be [begin, end] non-negative integers, not ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw corrupt(`${where}: data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataLen) {
      throw corrupt(`${where}: data_offsets [${begin}, ${end}] are out of range (the data section has ${dataLen} bytes)`);
    }
    const d = dtype as SafetensorsDType;
    const count = shape.reduce((a: number, b: number) => a * b, 1);
    const bytes = count * ITEM_SIZE[d];
    if (bytes !== end - begin) {
      throw corrupt(`${where}: shape [${shape.join(', ')}] of ${d} needs ${bytes} bytes but data_offsets ` +
        `[${begin}, ${end}] span ${end - begin}`);
    }
    entries.push({ name, dtype: d, shape: shape as number[], begin, end });
  }

  // Contiguous and non-overlapping, from 0 to the end of the buffer.
  const byOffset = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const e of byOffset) {
    if (e.begin < cursor) throw corrupt(`tensor ${JSON.stringify(e.name)}: data_offsets [${e.begin}, ${e.end}] overlap the previous tensor (which ends at ${cursor})`);
    if (e.begin > cursor) throw corrupt(`tensor ${JSON.stringify(e.name)}: data_offsets [${e.begin}, ${e.end}] leave a gap after byte ${cursor}`);
    cursor = e.end;
  }
  if (cursor !== dataLen) {
    throw corrupt(`the tensors cover ${cursor} bytes of data but the data section has ${dataLen} bytes`);
  }

  const tensors = Object.fromEntries(entries.map((e) => [e.name, {
    dtype: e.dtype,
    shape: e.shape,
    data: copyOut(buf.subarray(dataStart + e.begin, dataStart + e.end), e.dtype),
  } satisfies SafetensorsTensor]));
  return { tensors, metadata };
}

function parseMetadata(info: unknown): Record<string, string> {
  if (info === null) return {};
  if (!isObject(info)) throw corrupt(`__metadata__ must be an object of strings, not ${describeValue(info)}`);
  for (const [k, v] of Object.entries(info)) {
    if (typeof v !== 'string') throw corrupt(`__metadata__.${k} must be a string, not ${describeValue(v)}`);
  }
  return { ...(info as Record<string, string>) };
}

function copyOut(bytes: Uint8Array, dtype: SafetensorsDType): SafetensorsData {
  const count = bytes.length / ITEM_SIZE[dtype];
  const out = dtype === 'F32' ? new Float32Array(count) : dtype === 'I32' ? new Int32Array(count) : new Float64Array(count);
  if (LITTLE_ENDIAN) {
    new Uint8Array(out.buffer).set(bytes);
  } else {
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < count; i++) {
      out[i] = dtype === 'F32' ? v.getFloat32(4 * i, true) : dtype === 'I32' ? v.getInt32(4 * i, true) : v.getFloat64(8 * i, true);
    }
  }
  return out;
}

function dtypeOf(data: unknown): SafetensorsDType | undefined {
  if (isFloat32Array(data)) return 'F32';
  if (isInt32Array(data)) return 'I32';
  if (isFloat64Array(data)) return 'F64';
  return undefined;
}

/**
 * Serializes tensors (sorted by name, data in the same order) with an optional string metadata
 * map. The header is padded with spaces to a multiple of 8 bytes so the data section is aligned.
 * @throws {TypeError} a tensor that is not a Float32Array/Int32Array/Float64Array, non-string metadata
 * @throws {RangeError} a shape that does not match the data length, a bad name
 */
export function writeSafetensors(tensors: Record<string, SafetensorsInput>, metadata?: Record<string, string>): Uint8Array {
  if (!isObject(tensors)) throw invalidTypeError('tensors', 'object mapping names to typed arrays', tensors);
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) {
    if (!isObject(metadata)) throw invalidTypeError('metadata', 'object of strings', metadata);
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw invalidTypeError(`metadata.${k}`, 'string', v);
    }
    header.__metadata__ = { ...metadata };
  }
  const names = Object.keys(tensors).sort();
  const items: Array<{ data: SafetensorsData; begin: number }> = [];
  let offset = 0;
  for (const name of names) {
    if (name.length === 0 || name === '__metadata__') {
      throw new RangeError(`Expected a non-empty tensor name other than "__metadata__" but received ${JSON.stringify(name)}`);
    }
    const value = tensors[name];
    const data = dtypeOf(value) ? (value as SafetensorsData) : isObject(value) ? value.data : undefined;
    const dtype = dtypeOf(data);
    if (!dtype || !data) {
      throw invalidTypeError(`tensor ${JSON.stringify(name)}`, 'Float32Array, Int32Array or Float64Array (or { data, shape })', value);
    }
    const shape = dtypeOf(value) ? [data.length] : (value as { shape: unknown }).shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw invalidTypeError(`shape of tensor ${JSON.stringify(name)}`, 'array of non-negative integers', shape);
    }
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (count !== data.length) {
      throw new RangeError(`tensor ${JSON.stringify(name)}: shape [${shape.join(', ')}] has ${count} elements but ` +
        `the data has ${data.length}`);
    }
    const bytes = data.length * ITEM_SIZE[dtype];
    header[name] = { dtype, shape: [...shape], data_offsets: [offset, offset + bytes] };
    items.push({ data, begin: offset });
    offset += bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLen = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLen + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLen), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLen);
  const dataStart = 8 + headerLen;
  for (const { data, begin } of items) {
    if (LITTLE_ENDIAN) {
      out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), dataStart + begin);
    } else {
      const v = new DataView(out.buffer, dataStart + begin, data.byteLength);
      const size = data.BYTES_PER_ELEMENT;
      for (let i = 0; i < data.length; i++) {
        if (isFloat32Array(data)) v.setFloat32(i * size, data[i], true);
        else if (isInt32Array(data)) v.setInt32(i * size, data[i], true);
        else v.setFloat64(i * size, data[i], true);
      }
    }
  }
  return out;
}

/**
 * Writes `bytes` to `file` atomically: a temporary file beside it (`<file>.tmp-<pid>-<random>`),
 * fsync, then rename over the target. On any failure the temporary file is removed and the
 * target is left as it was.
 */
export async function writeFileAtomic(file: string, bytes: Uint8Array): Promise<void> {
  if (typeof file !== 'string' || file.length === 0) throw invalidTypeError('file', 'non-empty path string', file);
  if (!(bytes instanceof Uint8Array)) throw invalidTypeError('bytes', 'Uint8Array', bytes);
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  let created = false;
  try {
    const handle = await open(tmp, 'wx', 0o666);
    created = true;
    try {
      await handle.writeFile(bytes);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, file);
    created = false;
  } catch (err) {
    if (created) await unlink(tmp).catch(() => undefined);
    // name the file the caller asked for, not our temporary one; keep code/errno for callers
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? `the folder ${path.dirname(file)} does not exist` : e.message;
    throw Object.assign(new Error(`cannot write ${file}: ${why}`), { code: e.code, errno: e.errno, cause: err });
  }
  await syncDirectory(path.dirname(file));
}

/** Makes the rename durable; best effort (not every platform can open a directory). */
async function syncDirectory(dir: string): Promise<void> {
  try {
    const handle = await open(dir, 'r');
    try { await handle.sync(); } finally { await handle.close(); }
  } catch {
    // not supported here (Windows); the rename itself has happened
  }
}

/**
 * Reads only the `__metadata__` map of a safetensors file (the header, not the data), e.g. to tell
 * checkpoints apart without loading them. Throws the reader's RangeError on a bad header.
 */
export async function readSafetensorsMetadata(file: string): Promise<Record<string, string>> {
  const handle = await open(file, 'r');
  try {
    const size = (await handle.stat()).size;
    const head = Buffer.alloc(8);
    if (size < 8 || (await handle.read(head, 0, 8, 0)).bytesRead < 8) throw corrupt(`truncated: ${size} bytes`);
    const n = head.readBigUInt64LE(0);
    if (n > BigInt(Math.min(MAX_HEADER_BYTES, size - 8))) throw corrupt(`header length ${n} exceeds the file (${size} bytes)`);
    const text = Buffer.alloc(Number(n));
    await handle.read(text, 0, text.length, 8);
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(text));
    } catch (err) {
      throw corrupt(`the header is not valid JSON (${(err as Error).message})`);
    }
    if (!isObject(header)) throw corrupt(`the header must be a JSON object, not ${describeValue(header)}`);
    return parseMetadata(header.__metadata__ ?? null);
  } finally {
    await handle.close();
  }
}

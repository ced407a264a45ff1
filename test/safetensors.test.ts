// safetensors reader/writer and the atomic file write: round trip, header alignment, strict
// rejection of corrupt input with a clear message, and no temporary file or clobbered target
// left behind by a failed write.
import test from 'ava';
import { mkdtemp, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { MAX_HEADER_BYTES, readSafetensors, writeFileAtomic, writeSafetensors } from '../lib/safetensors.js';

/** Builds a file from a raw header object and data bytes (to make corrupt ones). */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0), headerText?: string): Uint8Array {
  const json = new TextEncoder().encode(headerText ?? JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function headerOf(bytes: Uint8Array): { length: number; text: string } {
  const length = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return { length, text: new TextDecoder().decode(bytes.subarray(8, 8 + length)) };
}

async function tempDir(t: { teardown: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'emae-safetensors-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

// ---- normal cases -----------------------------------------------------------------------------

test('round trip of F32, I32, F64 with shapes and metadata', (t) => {
  const w = Float32Array.from({ length: 12 }, (_, i) => i * 0.5 - 3);
  const bytes = writeSafetensors({
    'decoder_pred.weight': { data: w, shape: [4, 3] },
    cls_token: { data: Float32Array.from([1, 2]), shape: [1, 1, 2] },
    ints: { data: Int32Array.from([-1, 2, 2147483647]), shape: [3] },
    doubles: Float64Array.from([Math.PI, -0, 1e300]),
    empty: { data: new Float32Array(0), shape: [0, 5] },
  }, { format: 'pt', note: 'ünïcode' });
  const { tensors, metadata } = readSafetensors(bytes);
  t.deepEqual(metadata, { format: 'pt', note: 'ünïcode' });
  t.deepEqual(Object.keys(tensors).sort(), ['cls_token', 'decoder_pred.weight', 'doubles', 'empty', 'ints']);
  t.deepEqual(tensors['decoder_pred.weight'], { dtype: 'F32', shape: [4, 3], data: w });
  t.deepEqual(tensors.cls_token, { dtype: 'F32', shape: [1, 1, 2], data: Float32Array.from([1, 2]) });
  t.deepEqual(tensors.ints, { dtype: 'I32', shape: [3], data: Int32Array.from([-1, 2, 2147483647]) });
  t.deepEqual(tensors.doubles, { dtype: 'F64', shape: [3], data: Float64Array.from([Math.PI, -0, 1e300]) });
  t.deepEqual(tensors.empty, { dtype: 'F32', shape: [0, 5], data: new Float32Array(0) });
});

test('header: padded with spaces to a multiple of 8, names sorted, data in name order', (t) => {
  for (let extra = 0; extra < 9; extra++) {
    const bytes = writeSafetensors({ ['b'.repeat(extra + 1)]: Float32Array.from([1]), a: Float32Array.from([2, 3]) });
    const { length, text } = headerOf(bytes);
    t.is(length % 8, 0);
    t.is((8 + length) % 8, 0);
    t.regex(text, /^\{.*\} *$/);
    const header = JSON.parse(text) as Record<string, { data_offsets: [number, number] }>;
    t.deepEqual(Object.keys(header), ['a', 'b'.repeat(extra + 1)]);
    t.deepEqual(header.a.data_offsets, [0, 8]);
    t.deepEqual(header['b'.repeat(extra + 1)].data_offsets, [8, 12]);
  }
});

test('metadata comes first in the header and is optional', (t) => {
  const { text } = headerOf(writeSafetensors({ x: Float32Array.from([1]) }, { format: 'pt' }));
  t.true(text.startsWith('{"__metadata__":{"format":"pt"}'));
  t.deepEqual(readSafetensors(writeSafetensors({ x: Float32Array.from([1]) })).metadata, {});
});

test('read data is copied and aligned even from an odd offset', (t) => {
  const bytes = writeSafetensors({ x: Float32Array.from([1, 2, 3]), y: Float64Array.from([4]) });
  const shifted = new Uint8Array(bytes.length + 1);
  shifted.set(bytes, 1);
  const view = shifted.subarray(1);
  const { tensors } = readSafetensors(view);
  t.deepEqual([...tensors.x.data], [1, 2, 3]);
  t.deepEqual([...tensors.y.data], [4]);
  t.is(tensors.x.data.byteOffset % 4, 0);
  view.fill(0);
  t.deepEqual([...tensors.x.data], [1, 2, 3]);
});

test('reads a Buffer', (t) => {
  const bytes = Buffer.from(writeSafetensors({ x: Float32Array.from([5]) }));
  t.deepEqual([...readSafetensors(bytes).tensors.x.data], [5]);
});

test('a header written by another writer (no padding, metadata null) is read', (t) => {
  const data = new Uint8Array(Float32Array.from([1, 2]).buffer);
  const { tensors, metadata } = readSafetensors(rawFile({ __metadata__: null, t: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, data));
  t.deepEqual(metadata, {});
  t.deepEqual([...tensors.t.data], [1, 2]);
});

// ---- corrupt input ----------------------------------------------------------------------------

const f32 = (n: number) => new Uint8Array(n * 4);

const corrupt: Array<{ title: string; bytes: () => Uint8Array; message: RegExp }> = [
  { title: 'shorter than 8 bytes', bytes: () => new Uint8Array(5), message: /truncated: 5 bytes/ },
  { title: 'truncated header', bytes: () => writeSafetensors({ x: Float32Array.from([1]) }).subarray(0, 20), message: /truncated: the header length says/ },
  {
    title: 'header length beyond the limit',
    bytes: () => { const b = new Uint8Array(16); new DataView(b.buffer).setBigUint64(0, BigInt(MAX_HEADER_BYTES) + 1n, true); return b; },
    message: /header length .* exceeds the limit/,
  },
  {
    title: 'header length 2^64-1',
    bytes: () => { const b = new Uint8Array(16); new DataView(b.buffer).setBigUint64(0, 2n ** 64n - 1n, true); return b; },
    message: /exceeds the limit/,
  },
  { title: 'bad JSON', bytes: () => rawFile(null, undefined, '{"x": {"dtype": "F32",'), message: /not valid JSON/ },
  { title: 'invalid UTF-8', bytes: () => { const b = rawFile(null, undefined, '{"xx":1}'); b[10] = 0xff; return b; }, message: /UTF-8/ },
  { title: 'header a JSON array', bytes: () => rawFile([]), message: /must be a JSON object/ },
  {
    title: 'truncated data (offsets out of range)',
    bytes: () => writeSafetensors({ x: Float32Array.from([1, 2, 3]) }).subarray(0, -4),
    message: /tensor "x": data_offsets \[0, 12\] are out of range \(the data section has 8 bytes\)/,
  },
  {
    title: 'offsets out of range',
    bytes: () => rawFile({ w: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, f32(2)),
    message: /tensor "w".*out of range/,
  },
  {
    title: 'size mismatch between shape and offsets',
    bytes: () => rawFile({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32(2)),
    message: /tensor "w": shape \[3\] of F32 needs 12 bytes but data_offsets \[0, 8\] span 8/,
  },
  {
    title: 'overlapping tensors',
    bytes: () => rawFile({
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
    }, f32(3)),
    message: /tensor "b".*overlap/,
  },
  {
    title: 'a gap between tensors',
    bytes: () => rawFile({
      a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
      b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
    }, f32(3)),
    message: /tensor "b".*gap/,
  },
  {
    title: 'trailing bytes after the last tensor',
    bytes: () => rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, f32(2)),
    message: /cover 4 bytes of data but the data section has 8 bytes/,
  },
  {
    title: 'begin after end',
    bytes: () => rawFile({ a: { dtype: 'F32', shape: [0], data_offsets: [4, 0] } }, f32(1)),
    message: /tensor "a".*end before they begin/,
  },
  {
    title: 'unsupported dtype',
    bytes: () => rawFile({ 'blocks.0.attn.qkv.weight': { dtype: 'BF16', shape: [2], data_offsets: [0, 4] } }, f32(1)),
    message: /tensor "blocks\.0\.attn\.qkv\.weight" has dtype BF16, which emae does not read \(supported: F32, I32, F64\)/,
  },
  {
    title: 'unknown dtype',
    bytes: () => rawFile({ a: { dtype: 'Q7', shape: [1], data_offsets: [0, 4] } }, f32(1)),
    message: /tensor "a" has dtype Q7, an unknown dtype/,
  },
  {
    title: 'negative shape',
    bytes: () => rawFile({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, f32(1)),
    message: /tensor "a": shape must be an array of non-negative integers/,
  },
  {
    title: 'missing data_offsets',
    bytes: () => rawFile({ a: { dtype: 'F32', shape: [1] } }, f32(1)),
    message: /tensor "a": data_offsets must be/,
  },
  {
    title: 'non-string metadata',
    bytes: () => rawFile({ __metadata__: { epoch: 3 } }),
    message: /__metadata__\.epoch must be a string/,
  },
];

for (const c of corrupt) {
  test(`corrupt input: ${c.title}`, (t) => {
    const err = t.throws(() => readSafetensors(c.bytes()), { instanceOf: RangeError });
    t.regex(err!.message, /^invalid safetensors data: /);
    t.regex(err!.message, c.message);
  });
}

test('every truncation of a valid file is rejected, never misread', (t) => {
  const bytes = writeSafetensors({ a: Float32Array.from([1, 2]), b: Int32Array.from([3]) }, { format: 'pt' });
  for (let n = 0; n < bytes.length; n++) {
    t.throws(() => readSafetensors(bytes.subarray(0, n)), { instanceOf: RangeError }, `length ${n}`);
  }
});

// ---- bad calls --------------------------------------------------------------------------------

test('bad arguments to readSafetensors and writeSafetensors', (t) => {
  t.throws(() => readSafetensors('abc' as unknown as Uint8Array), { instanceOf: TypeError, message: /buf/ });
  t.throws(() => readSafetensors(new Float32Array(4) as unknown as Uint8Array), { instanceOf: TypeError, message: /buf/ });
  t.throws(() => writeSafetensors({ x: [1, 2] as unknown as Float32Array }), { instanceOf: TypeError, message: /tensor "x"/ });
  t.throws(() => writeSafetensors({ x: new Uint8Array(2) as unknown as Float32Array }), { instanceOf: TypeError, message: /tensor "x"/ });
  const e = t.throws(() => writeSafetensors({ w: { data: new Float32Array(6), shape: [4, 2] } }), { instanceOf: RangeError });
  t.regex(e!.message, /tensor "w": shape \[4, 2\] has 8 elements but the data has 6/);
  t.throws(() => writeSafetensors({ w: { data: new Float32Array(2), shape: [-2, -1] } }), { instanceOf: TypeError, message: /shape of tensor "w"/ });
  t.throws(() => writeSafetensors({ __metadata__: new Float32Array(1) }), { instanceOf: RangeError, message: /__metadata__/ });
  t.throws(() => writeSafetensors({ x: new Float32Array(1) }, { epoch: 3 as unknown as string }), { instanceOf: TypeError, message: /metadata\.epoch/ });
  t.throws(() => writeSafetensors(null as unknown as Record<string, Float32Array>), { instanceOf: TypeError, message: /tensors/ });
});

// ---- atomic write -----------------------------------------------------------------------------

test('writeFileAtomic writes the bytes and leaves no temporary file', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'model.safetensors');
  const bytes = writeSafetensors({ x: Float32Array.from([1, 2, 3]) });
  await writeFileAtomic(file, bytes);
  t.deepEqual(new Uint8Array(await readFile(file)), bytes);
  // replacing an existing file
  const bytes2 = writeSafetensors({ y: Float32Array.from([4]) });
  await writeFileAtomic(file, bytes2);
  t.deepEqual(new Uint8Array(await readFile(file)), bytes2);
  t.deepEqual(await readdir(dir), ['model.safetensors']);
});

test('writeFileAtomic into a missing directory throws and creates nothing', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'no-such-dir', 'model.safetensors');
  const err = await t.throwsAsync(writeFileAtomic(file, new Uint8Array([1, 2, 3])), { code: 'ENOENT' });
  t.true(err!.message.startsWith(`cannot write ${file}: the folder`), 'names the requested file, not the temporary one');
  t.deepEqual(await readdir(dir), []);
});

test('writeFileAtomic failing at the rename removes its temporary file and keeps the target', async (t) => {
  const dir = await tempDir(t);
  // the target is a non-empty directory: the temporary file is written, the rename fails
  const target = path.join(dir, 'target');
  await mkdir(target);
  await writeFile(path.join(target, 'keep.txt'), 'precious');
  const err = await t.throwsAsync(writeFileAtomic(target, new Uint8Array([1, 2, 3])));
  t.truthy((err as NodeJS.ErrnoException).code);
  t.deepEqual(await readdir(dir), ['target']);
  t.true((await stat(target)).isDirectory());
  t.is(await readFile(path.join(target, 'keep.txt'), 'utf8'), 'precious');
});

test('writeFileAtomic does not clobber an existing file when the write fails', async (t) => {
  const dir = await tempDir(t);
  const file = path.join(dir, 'weights.safetensors');
  await writeFile(file, 'old contents');
  await t.throwsAsync(writeFileAtomic(file, 'not bytes' as unknown as Uint8Array), { instanceOf: TypeError, message: /bytes/ });
  await t.throwsAsync(writeFileAtomic('', new Uint8Array(1)), { instanceOf: TypeError, message: /file/ });
  t.is(await readFile(file, 'utf8'), 'old contents');
  t.deepEqual(await readdir(dir), ['weights.safetensors']);
});

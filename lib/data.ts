// Datasets held in memory as (count, C, H, W) float32, normalized: readers for the IDX format
// (MNIST, Fashion-MNIST; gzip or not) and the CIFAR-10 binary format, and a synthetic set.
// Images can be zero-padded to a larger square so that the patch grid splits into the parts.
import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import { invalidRangeError } from './errors.js';
import type { ImageSet } from './trainer.js';

export interface LabelledImageSet extends ImageSet {
  channels: number;
  size: number;
  labels?: Uint8Array;
  /** how the pixels (value/255 in [0, 1]) were normalized, (v − mean)/std per channel, when known */
  normalization?: Normalization;
}

export interface Normalization {
  mean: readonly number[];
  std: readonly number[];
}

const maybeGunzip = (bytes: Uint8Array): Uint8Array =>
  bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b ? gunzipSync(bytes) : bytes;

/** Parses an IDX file of unsigned bytes (magic 0x0000080N): its dims and data. */
export function parseIdx(raw: Uint8Array, what = 'IDX data'): { dims: number[]; data: Uint8Array } {
  const bytes = maybeGunzip(raw);
  if (bytes.length < 4 || bytes[0] !== 0 || bytes[1] !== 0)
    throw new RangeError(`${what}: not an IDX file (bad magic number)`);
  if (bytes[2] !== 0x08) throw new RangeError(`${what}: IDX element type 0x${bytes[2].toString(16)} is not unsigned byte (0x08)`);
  const ndim = bytes[3];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4 + 4 * ndim) throw new RangeError(`${what}: truncated IDX header`);
  const dims = Array.from({ length: ndim }, (_, i) => view.getUint32(4 + 4 * i, false));
  const count = dims.reduce((a, b) => a * b, 1);
  const offset = 4 + 4 * ndim;
  if (bytes.length - offset !== count)
    throw new RangeError(`${what}: expected ${count} bytes of data for dims [${dims.join(',')}] but found ${bytes.length - offset}`);
  return { dims, data: bytes.subarray(offset) };
}

function toImageSet(pixels: Uint8Array, count: number, channels: number, size: number, padTo: number | undefined,
  norm: Normalization): LabelledImageSet {
  const out = padTo ?? size;
  if (!Number.isInteger(out) || out < size) throw invalidRangeError('padTo', `an integer >= the image size ${size}`, padTo);
  if (norm.mean.length !== channels || norm.std.length !== channels)
    throw invalidRangeError('normalization', `mean and std of ${channels} channel(s)`, norm);
  const off = Math.floor((out - size) / 2);
  const images = new Float32Array(count * channels * out * out);
  for (let n = 0; n < count; n++)
    for (let c = 0; c < channels; c++) {
      const pad = -norm.mean[c] / norm.std[c];  // the padding is black, normalized like the pixels
      const base = (n * channels + c) * out * out;
      images.fill(pad, base, base + out * out);
      for (let y = 0; y < size; y++)
        for (let x = 0; x < size; x++)
          images[base + (y + off) * out + x + off] =
            (pixels[((n * channels + c) * size + y) * size + x] / 255 - norm.mean[c]) / norm.std[c];
    }
  return { images, count, channels, size: out, normalization: { mean: [...norm.mean], std: [...norm.std] } };
}

/** MNIST / Fashion-MNIST images (and labels) from IDX files, gzip or not. */
export async function loadIdx(imagesFile: string, options: { labelsFile?: string; padTo?: number; normalization?: Normalization } = {}): Promise<LabelledImageSet> {
  const { dims, data } = parseIdx(await readFile(imagesFile), imagesFile);
  if (dims.length !== 3 || dims[1] !== dims[2]) throw new RangeError(`${imagesFile}: expected square images (N, H, W), got [${dims.join(',')}]`);
  const set = toImageSet(data, dims[0], 1, dims[1], options.padTo, options.normalization ?? { mean: [0.5], std: [0.5] });
  if (options.labelsFile) {
    const labels = parseIdx(await readFile(options.labelsFile), options.labelsFile);
    if (labels.dims.length !== 1 || labels.dims[0] !== dims[0])
      throw new RangeError(`${options.labelsFile}: ${labels.dims[0]} labels for ${dims[0]} images`);
    set.labels = Uint8Array.from(labels.data);
  }
  return set;
}

/** CIFAR-10 binary batches: records of 1 label byte + 3072 pixel bytes (3 × 32 × 32). */
export async function loadCifar10(files: string[], options: { padTo?: number; normalization?: Normalization } = {}): Promise<LabelledImageSet> {
  const record = 1 + 3 * 32 * 32;
  const parts = await Promise.all(files.map((f) => readFile(f)));
  parts.forEach((b, i) => {
    if (b.length === 0 || b.length % record !== 0) throw new RangeError(`${files[i]}: ${b.length} bytes is not a whole number of CIFAR-10 records (${record} bytes each)`);
  });
  const count = parts.reduce((a, b) => a + b.length / record, 0);
  const pixels = new Uint8Array(count * 3072), labels = new Uint8Array(count);
  let n = 0;
  for (const b of parts)
    for (let r = 0; r < b.length; r += record, n++) {
      labels[n] = b[r];
      pixels.set(b.subarray(r + 1, r + record), n * 3072);
    }
  // CIFAR-10 channel statistics
  const set = toImageSet(pixels, count, 3, 32, options.padTo,
    options.normalization ?? { mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616] });
  set.labels = labels;
  return set;
}

/** A seeded synthetic set: discs and rectangles of random colours on gradients, normalized. */
export function syntheticShapes(count: number, channels: number, size: number, seed = 0): LabelledImageSet {
  if (!Number.isInteger(count) || count < 1) throw invalidRangeError('count', 'positive integer', count);
  let s = (seed * 2654435761) >>> 0 || 1;
  const rand = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const images = new Float32Array(count * channels * size * size), labels = new Uint8Array(count);
  for (let n = 0; n < count; n++) {
    const bg = Array.from({ length: channels }, rand), fg = Array.from({ length: channels }, rand);
    const cx = rand() * size, cy = rand() * size, r = size * (0.12 + 0.25 * rand()), disc = rand() < 0.5;
    labels[n] = disc ? 0 : 1;
    for (let c = 0; c < channels; c++)
      for (let y = 0; y < size; y++)
        for (let x = 0; x < size; x++) {
          const inside = disc ? (x - cx) ** 2 + (y - cy) ** 2 < r * r : Math.abs(x - cx) < r && Math.abs(y - cy) < r / 2;
          const v = inside ? fg[c] : bg[c] * (0.5 + (0.5 * y) / size);
          images[((n * channels + c) * size + y) * size + x] = (v - 0.5) / 0.25;
        }
  }
  const normalization = { mean: Array<number>(channels).fill(0.5), std: Array<number>(channels).fill(0.25) };
  return { images, count, channels, size, labels, normalization };
}

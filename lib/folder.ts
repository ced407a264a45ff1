// An image-folder dataset decoded with sharp (JPEG, PNG, WebP): class sub-folders give labels,
// every image gets MAE's augmentation — RandomResizedCrop (scale 0.2–1.0, ratio 3/4–4/3,
// bicubic), a horizontal flip with probability ½, ImageNet mean/std normalization — seeded per
// (seed, index) so a batch is reproducible, bitwise, whoever decodes it (lib/decode.ts); or, with
// `crop: 'center'`, MAE's evaluation transform (short side resized, central crop). A load can ask
// for another crop than the folder's (a fine-tuner scores its test folder with 'center'). A batch's
// images decode in parallel on libuv's pool; with `workers` ≥ 2 the JS around each decode
// (normalization) runs on that many worker threads too (lib/decode-pool.ts), else on this one.
// Every file's header is read when the folder is opened (in parallel); a file that fails is
// reported then, once, with sharp's reason, and left out of the count. One whose header reads but
// whose data does not (a truncated PNG) is reported once, at its first decode, and from then on
// replaced by the next readable image without another attempt.
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { DecodePool } from './decode-pool.js';
import { decodeInto, FOLDER_CROPS, orientedSize, sharpReason, WORDS_LOST, type CropParams, type DecodeOptions, type FolderCrop } from './decode.js';
import { assertKnownKeys, assertObject, invalidParameterError, invalidRangeError, invalidTypeError } from './errors.js';
import type { BatchSource } from './trainer.js';

export { centerCropGeometry, randomResizedCropBox, type CropParams, type FolderCrop } from './decode.js';

export interface ImageFolderOptions {
  /** output size (square) */
  size: number;
  /**
   * How each image becomes size × size (default 'random'): 'random', MAE's RandomResizedCrop
   * (scale, ratio, bicubic) then a horizontal flip with probability ½; 'center', MAE's evaluation
   * transform (util/datasets.py build_transform): the short side resized (bicubic) to
   * ⌊size / crop_pct⌋, crop_pct = 224/256 up to size 224 (256 for 224) and 1 above, then the
   * central size × size; 'whole', the whole image resized to size × size (aspect ratio not kept).
   */
  crop?: FolderCrop;
  /** false: crop 'whole' (the older spelling; true is 'random') */
  augment?: boolean;
  /** RandomResizedCrop area fraction (default [0.2, 1], MAE's pretraining; its fine-tuning uses [0.08, 1]) */
  scale?: readonly [number, number];
  ratio?: readonly [number, number];
  mean?: readonly [number, number, number];
  std?: readonly [number, number, number];
  /** called once for each file that cannot be decoded, with sharp's reason (default: console.warn) */
  onError?: (file: string, reason: string) => void;
  /** read every file's header at open and leave out those that fail (default true) */
  verify?: boolean;
  /**
   * at most this many files, spread evenly over the class sub-folders: the first file of each
   * (the images directly in the folder count as one more group, first), then the second of each, …;
   * taken before the headers are read, so the unreadable among them are left out of the count
   */
  limit?: number;
  /** progress of that check, for large folders: (0, total) first, then every 1000 files and at the end */
  onProgress?: (checked: number, total: number) => void;
  /**
   * decode threads: 0 or 1 decode on the main thread; N ≥ 2 start N worker threads (at the first
   * load; call dispose() when done, though idle workers never keep the process alive). Default 0.
   * The batches are bitwise the same for any value.
   */
  workers?: number;
}

/** What a single load may change of the folder's transform. */
export interface FolderTransform {
  crop?: FolderCrop;
  /** RandomResizedCrop area fraction [min, max], 0 < min ≤ max ≤ 1 */
  scale?: readonly [number, number];
}

/** A decoded batch with what was drawn for it. */
export interface LoadedBatch {
  /** (B, 3, size, size) float32 */
  images: Float32Array;
  /** the label of each image decoded (−1 without class folders) */
  labels: Int32Array;
  /**
   * for each image: the index of the file decoded (the one asked for, or the next readable one)
   * and its crop (with crop 'center': the central square in the image's pixels, rounded) and flip
   */
  crops: Array<CropParams & { index: number }>;
}

/** One unreadable file and sharp's reason. */
export interface UnreadableImage {
  file: string;
  reason: string;
}

const EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp']);
/** Header reads in flight at open; sharp queues them on libuv's pool, this only bounds the queue. */
const PROBE_CONCURRENCY = 32;
const warnSkip = (file: string, reason: string) => console.warn(`emae: skipping ${file}: ${reason}`);

function assertCrop(name: string, crop: unknown): asserts crop is FolderCrop {
  if (!FOLDER_CROPS.includes(crop as FolderCrop)) throw invalidParameterError(name, `one of ${FOLDER_CROPS.map((c) => `'${c}'`).join(', ')}`, crop, 'string');
}

function assertScale(name: string, scale: unknown): asserts scale is readonly [number, number] {
  const ok = Array.isArray(scale) && scale.length === 2 && scale.every((v) => typeof v === 'number' && Number.isFinite(v)) &&
    scale[0] > 0 && scale[0] <= scale[1] && scale[1] <= 1;
  if (!ok) throw (Array.isArray(scale) ? invalidRangeError : invalidTypeError)(name, '[min, max] with 0 < min ≤ max ≤ 1', scale);
}

/** `file`'s oriented size when its header reads, else why not. */
async function probe(file: string, again = true): Promise<{ width: number; height: number } | string> {
  try {
    const size = orientedSize(await sharp(file, { failOn: 'error' }).metadata());
    return size.width && size.height ? size : 'no image dimensions in the header';
  } catch (err) {
    const reason = sharpReason(err);
    if (!again || !WORDS_LOST.test(reason)) return reason;
    const second = await probe(file, false);
    return typeof second !== 'string' || second.length > reason.length ? second : reason;
  }
}

/** `limit` of the indices, round-robin over the labels in order (each label's files in order), as flags. */
function evenlyOverLabels(labels: readonly number[], limit: number): Uint8Array {
  const groups = new Map<number, number[]>();
  for (const [i, label] of labels.entries()) (groups.get(label) ?? groups.set(label, []).get(label)!).push(i);
  const keep = new Uint8Array(labels.length);
  for (let round = 0, taken = 0; taken < limit; round++)
    for (const g of groups.values()) if (round < g.length && taken < limit) {
      keep[g[round]] = 1;
      taken++;
    }
  return keep;
}

export class ImageFolder implements BatchSource {
  /** the folder opened */
  readonly root: string;
  readonly files: string[];
  readonly labels: Int32Array;
  readonly classes: string[];
  /** output size: images load as (B, 3, size, size) */
  readonly size: number;
  readonly channels = 3;
  /** the transform of a load that asks for none (the `crop` option) */
  readonly crop: FolderCrop;
  /** decode threads (the `workers` option): 0 or 1 = the main thread */
  readonly workers: number;
  /** how the decoded pixels (value/255) are normalized, (v − mean)/std per channel */
  readonly normalization: { readonly mean: readonly number[]; readonly std: readonly number[] };
  readonly #o: DecodeOptions & { verify: boolean; onError: (file: string, reason: string) => void };
  /** file → reason, in the order found; each is reported once */
  readonly #unreadable = new Map<string, string>();
  /** indices into files whose decode failed */
  readonly #failed = new Set<number>();
  readonly #pool: DecodePool | undefined;
  /** each file's oriented width and height, read at open or at its first decode (0 until known) */
  readonly #sizes: Int32Array;
  #disposed = false;

  private constructor(root: string, files: string[], labels: number[], classes: string[], options: ImageFolderOptions,
    unreadable: readonly UnreadableImage[], sizes: Int32Array) {
    this.root = root;
    this.files = files;
    this.#sizes = sizes;
    this.labels = Int32Array.from(labels);
    this.classes = classes;
    this.size = options.size;
    this.crop = options.crop ?? (options.augment === false ? 'whole' : 'random');
    this.#o = {
      size: options.size, crop: this.crop, scale: options.scale ?? [0.2, 1.0],
      ratio: options.ratio ?? [3 / 4, 4 / 3], mean: options.mean ?? [0.485, 0.456, 0.406],
      std: options.std ?? [0.229, 0.224, 0.225], verify: options.verify ?? true, onError: options.onError ?? warnSkip,
    };
    this.workers = options.workers ?? 0;
    this.normalization = { mean: [...this.#o.mean], std: [...this.#o.std] };
    if (this.workers >= 2) {
      const { size, crop, scale, ratio, mean, std } = this.#o;
      this.#pool = new DecodePool(this.workers, { size, crop, scale: [...scale], ratio: [...ratio], mean: [...mean], std: [...std] });
    }
    for (const u of unreadable) this.#unreadable.set(u.file, u.reason);
  }

  /**
   * Scans `root`: images directly in it (label −1) and in its sub-folders (one label per folder,
   * sorted); then (unless `verify: false`) reads every header and leaves out, reporting each
   * once, the files that fail.
   * @throws {TypeError | RangeError} a bad size, workers, crop or scale, or augment: true with a crop other than 'random'
   * @throws {RangeError} no image file, or none readable (the first reason given)
   */
  static async open(root: string, options: ImageFolderOptions): Promise<ImageFolder> {
    if (!Number.isInteger(options.size) || options.size < 1) throw invalidRangeError('size', 'positive integer', options.size);
    if (options.workers !== undefined && !(Number.isSafeInteger(options.workers) && options.workers >= 0))
      throw invalidParameterError('workers', 'non-negative integer (0 or 1: decode on the main thread)', options.workers, 'number');
    if (options.crop !== undefined) assertCrop('crop', options.crop);
    if (options.augment !== undefined && options.crop !== undefined && options.augment !== (options.crop === 'random'))
      throw new RangeError(`ImageFolder: augment ${options.augment} contradicts crop '${options.crop}' (give crop alone)`);
    if (options.scale !== undefined) assertScale('scale', options.scale);
    if (options.limit !== undefined && !(Number.isSafeInteger(options.limit) && options.limit >= 1))
      throw invalidParameterError('limit', 'positive integer', options.limit, 'number');
    const entries = await readdir(root, { withFileTypes: true });
    let files: string[] = [], labels: number[] = [];
    const isImage = (name: string) => EXTENSIONS.has(path.extname(name).toLowerCase());
    for (const e of entries.filter((e) => e.isFile() && isImage(e.name)).sort((a, b) => a.name.localeCompare(b.name))) {
      files.push(path.join(root, e.name));
      labels.push(-1);
    }
    const classes = entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
    for (const [label, cls] of classes.entries())
      for (const name of (await readdir(path.join(root, cls))).filter(isImage).sort()) {
        files.push(path.join(root, cls, name));
        labels.push(label);
      }
    if (files.length === 0) throw new RangeError(`${root}: no JPEG, PNG or WebP images found`);
    if (options.limit !== undefined && options.limit < files.length) {
      const keep = evenlyOverLabels(labels, options.limit);
      files = files.filter((_, i) => keep[i]);
      labels = labels.filter((_, i) => keep[i]);
    }
    if (options.verify === false) return new ImageFolder(root, files, labels, classes, options, [], new Int32Array(2 * files.length));

    const reasons: Array<{ width: number; height: number } | string> = new Array(files.length);
    let next = 0, checked = 0;
    options.onProgress?.(0, files.length);
    const worker = async () => {
      while (next < files.length) {
        const i = next++;
        reasons[i] = await probe(files[i]);
        if (++checked % 1000 === 0 && checked < files.length) options.onProgress?.(checked, files.length);
      }
    };
    await Promise.all(Array.from({ length: Math.min(PROBE_CONCURRENCY, files.length) }, worker));
    options.onProgress?.(files.length, files.length);
    const unreadable: UnreadableImage[] = [], kept: string[] = [], keptLabels: number[] = [], sizes: number[] = [];
    for (const [i, file] of files.entries()) {
      const r = reasons[i];
      if (typeof r !== 'string') {
        kept.push(file);
        keptLabels.push(labels[i]);
        sizes.push(r.width, r.height);
      } else {
        unreadable.push({ file, reason: r });
        (options.onError ?? warnSkip)(file, r);
      }
    }
    if (kept.length === 0) {
      throw new RangeError(`${root}: none of the ${files.length} images is readable (${unreadable[0].file}: ${unreadable[0].reason})`);
    }
    return new ImageFolder(root, kept, keptLabels, classes, options, unreadable, Int32Array.from(sizes));
  }

  /** Images that can be loaded: files found, less those whose header did not read. */
  get count(): number {
    return this.files.length;
  }

  /** Files that could not be read, with sharp's reason: at open, then as decodes fail. */
  get unreadable(): UnreadableImage[] {
    return [...this.#unreadable].map(([file, reason]) => ({ file, reason }));
  }

  /** (B, 3, size, size) float32 for the given indices; augmentation seeded by (seed, index). */
  async load(indices: Int32Array, seed: number): Promise<Float32Array> {
    return (await this.loadBatch(indices, seed)).images;
  }

  /**
   * load() with the labels and the crop and flip drawn for each image; `transform` changes the
   * folder's crop or scale for this load only.
   * @throws {TypeError} a bad transform
   */
  async loadBatch(indices: Int32Array, seed: number, transform?: FolderTransform): Promise<LoadedBatch> {
    if (this.#disposed) throw new Error('ImageFolder: the folder was disposed');
    let override: FolderTransform | undefined;
    if (transform !== undefined) {
      assertObject('transform', transform, 'object with crop and/or scale');
      assertKnownKeys('transform option', transform as Record<string, unknown>, ['crop', 'scale']);
      if (transform.crop !== undefined) assertCrop('transform.crop', transform.crop);
      if (transform.scale !== undefined) assertScale('transform.scale', transform.scale);
      override = { ...(transform.crop !== undefined ? { crop: transform.crop } : {}), ...(transform.scale !== undefined ? { scale: [transform.scale[0], transform.scale[1]] } : {}) };
    }
    const S = this.#o.size, per = 3 * S * S;
    const out = new Float32Array(indices.length * per);
    const labels = new Int32Array(indices.length);
    const crops = new Array<CropParams & { index: number }>(indices.length);
    await Promise.all(Array.from(indices, async (index, b) => {
      let last = '';
      for (let attempt = 0; attempt < Math.min(this.files.length, 16); attempt++) {
        const i = (index + attempt) % this.files.length;
        const file = this.files[i];
        if (this.#failed.has(i)) {
          last = `${file}: ${this.#unreadable.get(file)}`;
          continue;
        }
        const r = await this.#decode(i, seed, out, b * per, override);
        if (!('reason' in r)) {
          labels[b] = this.labels[i];
          crops[b] = { index: i, ...r };
          return;
        }
        // loads run concurrently: the first to fail on a file reports it
        if (this.#failed.has(i)) {
          last = `${file}: ${this.#unreadable.get(file) ?? r.reason}`;
          continue;
        }
        this.#failed.add(i);
        const reason = await this.#reasonFor(i, seed, r.reason, override);
        last = `${file}: ${reason}`;
        this.#unreadable.set(file, reason);
        this.#o.onError(file, reason);
      }
      throw new Error(`no readable image among the ${Math.min(this.files.length, 16)} files from index ${index} (last: ${last})`);
    }));
    return { images: out, labels, crops };
  }

  /**
   * Ends the decode workers (after the decodes in flight); later loads are refused. Safe to call
   * more than once, and without workers.
   */
  async dispose(): Promise<void> {
    this.#disposed = true;
    await this.#pool?.close();
  }

  /** The reason, with a second decode for the words when libvips' were lost (WORDS_LOST). */
  async #reasonFor(index: number, seed: number, reason: string, override: FolderTransform | undefined): Promise<string> {
    if (!WORDS_LOST.test(reason)) return reason;
    const again = await this.#decode(index, seed, new Float32Array(3 * this.#o.size ** 2), 0, override);
    return 'reason' in again && again.reason.length > reason.length ? again.reason : reason;
  }

  /** Decodes file `index` into `out` at `offset`, here or on a worker: the crop drawn, or sharp's reason. */
  async #decode(index: number, seed: number, out: Float32Array, offset: number, override: FolderTransform | undefined): Promise<CropParams | { reason: string }> {
    const known = { width: this.#sizes[2 * index], height: this.#sizes[2 * index + 1] };
    let r: Awaited<ReturnType<typeof decodeInto>>;
    if (!this.#pool) {
      try {
        r = await decodeInto(this.files[index], index, seed, override ? { ...this.#o, ...override } : this.#o, out, offset, known);
      } catch (err) {
        return { reason: sharpReason(err) };
      }
    } else {
      const d = await this.#pool.decode(this.files[index], index, seed, known, override);
      if ('reason' in d) return d;
      out.set(d.pixels, offset);
      r = d;
    }
    this.#sizes[2 * index] = r.width;
    this.#sizes[2 * index + 1] = r.height;
    return r.crop;
  }
}

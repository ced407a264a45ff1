// An image-folder dataset decoded with sharp (JPEG, PNG, WebP): class sub-folders give labels,
// every image gets MAE's augmentation — RandomResizedCrop (scale 0.2–1.0, ratio 3/4–4/3,
// bicubic), a horizontal flip with probability ½, ImageNet mean/std normalization — seeded per
// (seed, index) so a batch is reproducible. Images decode in parallel on libuv's pool. Every
// file's header is read when the folder is opened (in parallel); a file that fails is reported
// then, once, with sharp's reason, and left out of the count. One whose header reads but whose
// data does not (a truncated PNG) is reported once, at its first decode, and from then on
// replaced by the next readable image without another attempt.
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import sharp from 'sharp';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';
import { invalidRangeError } from './errors.js';
import type { BatchSource } from './trainer.js';

export interface ImageFolderOptions {
  /** output size (square) */
  size: number;
  /** MAE augmentation (default true); false: resize the whole image, no flip */
  augment?: boolean;
  scale?: readonly [number, number];
  ratio?: readonly [number, number];
  mean?: readonly [number, number, number];
  std?: readonly [number, number, number];
  /** called once for each file that cannot be decoded, with sharp's reason (default: console.warn) */
  onError?: (file: string, reason: string) => void;
  /** read every file's header at open and leave out those that fail (default true) */
  verify?: boolean;
  /** progress of that check, for large folders: (0, total) first, then every 1000 files and at the end */
  onProgress?: (checked: number, total: number) => void;
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

/** sharp's message on one line: libvips repeats its decoder's lines, one per retry. */
function sharpReason(err: unknown): string {
  const lines = String((err as Error)?.message ?? err).split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
  return [...new Set(lines)].join('; ') || 'unknown error';
}

/**
 * sharp's message when libvips' error text was lost: libvips keeps it in one buffer shared by all
 * threads, so a concurrent decode can clear it. A second try usually gets the decoder's words.
 */
const WORDS_LOST = /^Unknown error$|:$/;

/** undefined when `file`'s header reads, else why not. */
async function probe(file: string, again = true): Promise<string | undefined> {
  try {
    const meta = await sharp(file, { failOn: 'error' }).metadata();
    return meta.width && meta.height ? undefined : 'no image dimensions in the header';
  } catch (err) {
    const reason = sharpReason(err);
    if (!again || !WORDS_LOST.test(reason)) return reason;
    const second = await probe(file, false);
    return second === undefined || second.length > reason.length ? second : reason;
  }
}

/** A crop box (left, top, width, height) as torchvision's RandomResizedCrop.get_params draws it. */
export function randomResizedCropBox(width: number, height: number, scale: readonly [number, number],
  ratio: readonly [number, number], rand: () => number): { left: number; top: number; width: number; height: number } {
  const area = width * height;
  const logRatio = [Math.log(ratio[0]), Math.log(ratio[1])];
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * (scale[0] + (scale[1] - scale[0]) * rand());
    const aspect = Math.exp(logRatio[0] + (logRatio[1] - logRatio[0]) * rand());
    const w = Math.round(Math.sqrt(target * aspect)), h = Math.round(Math.sqrt(target / aspect));
    if (w > 0 && h > 0 && w <= width && h <= height)
      return { left: Math.floor(rand() * (width - w + 1)), top: Math.floor(rand() * (height - h + 1)), width: w, height: h };
  }
  // fallback: a central crop with the aspect ratio clamped into range
  const inRatio = width / height;
  let w = width, h = height;
  if (inRatio < ratio[0]) h = Math.round(w / ratio[0]);
  else if (inRatio > ratio[1]) w = Math.round(h * ratio[1]);
  return { left: Math.floor((width - w) / 2), top: Math.floor((height - h) / 2), width: w, height: h };
}

export class ImageFolder implements BatchSource {
  readonly files: string[];
  readonly labels: Int32Array;
  readonly classes: string[];
  readonly #o: Required<Omit<ImageFolderOptions, 'onError' | 'onProgress'>> & { onError: (file: string, reason: string) => void };
  /** file → reason, in the order found; each is reported once */
  readonly #unreadable = new Map<string, string>();
  /** indices into files whose decode failed */
  readonly #failed = new Set<number>();

  private constructor(files: string[], labels: number[], classes: string[], options: ImageFolderOptions,
    unreadable: readonly UnreadableImage[]) {
    this.files = files;
    this.labels = Int32Array.from(labels);
    this.classes = classes;
    this.#o = {
      size: options.size, augment: options.augment ?? true, scale: options.scale ?? [0.2, 1.0],
      ratio: options.ratio ?? [3 / 4, 4 / 3], mean: options.mean ?? [0.485, 0.456, 0.406],
      std: options.std ?? [0.229, 0.224, 0.225], verify: options.verify ?? true, onError: options.onError ?? warnSkip,
    };
    for (const u of unreadable) this.#unreadable.set(u.file, u.reason);
  }

  /**
   * Scans `root`: images directly in it (label −1) and in its sub-folders (one label per folder,
   * sorted); then (unless `verify: false`) reads every header and leaves out, reporting each
   * once, the files that fail.
   * @throws {RangeError} a bad size; no image file, or none readable (the first reason given)
   */
  static async open(root: string, options: ImageFolderOptions): Promise<ImageFolder> {
    if (!Number.isInteger(options.size) || options.size < 1) throw invalidRangeError('size', 'positive integer', options.size);
    const entries = await readdir(root, { withFileTypes: true });
    const files: string[] = [], labels: number[] = [];
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
    if (options.verify === false) return new ImageFolder(files, labels, classes, options, []);

    const reasons: Array<string | undefined> = new Array(files.length);
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
    const unreadable: UnreadableImage[] = [], kept: string[] = [], keptLabels: number[] = [];
    for (const [i, file] of files.entries()) {
      if (reasons[i] === undefined) {
        kept.push(file);
        keptLabels.push(labels[i]);
      } else {
        unreadable.push({ file, reason: reasons[i]! });
        (options.onError ?? warnSkip)(file, reasons[i]!);
      }
    }
    if (kept.length === 0) {
      throw new RangeError(`${root}: none of the ${files.length} images is readable (${unreadable[0].file}: ${unreadable[0].reason})`);
    }
    return new ImageFolder(kept, keptLabels, classes, options, unreadable);
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
    const S = this.#o.size, per = 3 * S * S;
    const out = new Float32Array(indices.length * per);
    await Promise.all(Array.from(indices, async (index, b) => {
      let last = '';
      for (let attempt = 0; attempt < Math.min(this.files.length, 16); attempt++) {
        const i = (index + attempt) % this.files.length;
        const file = this.files[i];
        if (this.#failed.has(i)) {
          last = `${file}: ${this.#unreadable.get(file)}`;
          continue;
        }
        try {
          out.set(await this.#decode(i, seed), b * per);
          return;
        } catch (err) {
          // loads run concurrently: the first to fail on a file reports it
          if (this.#failed.has(i)) {
            last = `${file}: ${this.#unreadable.get(file) ?? sharpReason(err)}`;
            continue;
          }
          this.#failed.add(i);
          const reason = await this.#reasonFor(i, seed, sharpReason(err));
          last = `${file}: ${reason}`;
          this.#unreadable.set(file, reason);
          this.#o.onError(file, reason);
        }
      }
      throw new Error(`no readable image among the ${Math.min(this.files.length, 16)} files from index ${index} (last: ${last})`);
    }));
    return out;
  }

  /** The reason, with a second decode for the words when libvips' were lost (WORDS_LOST). */
  async #reasonFor(index: number, seed: number, reason: string): Promise<string> {
    if (!WORDS_LOST.test(reason)) return reason;
    try {
      await this.#decode(index, seed);
    } catch (err) {
      const again = sharpReason(err);
      if (again.length > reason.length) return again;
    }
    return reason;
  }

  async #decode(index: number, seed: number): Promise<Float32Array> {
    const o = this.#o, S = o.size;
    const rng = xoroshiro128plus((seed * 0x9e3779b1 + index) | 0);
    const rand = () => uniformFloat64(rng);
    let img = sharp(this.files[index], { failOn: 'error' }).rotate();  // EXIF orientation
    const meta = await img.metadata();
    const width = meta.autoOrient?.width ?? meta.width, height = meta.autoOrient?.height ?? meta.height;
    if (!width || !height) throw new Error('no image dimensions');
    if (o.augment) {
      const box = randomResizedCropBox(width, height, o.scale, o.ratio, rand);
      img = img.extract(box);
    }
    img = img.resize(S, S, { kernel: 'cubic', fit: 'fill' });
    if (o.augment && rand() < 0.5) img = img.flop();
    const { data, info } = await img.removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3 || info.width !== S || info.height !== S) throw new Error(`unexpected decode ${info.width}×${info.height}×${info.channels}`);
    const out = new Float32Array(3 * S * S);
    for (let c = 0; c < 3; c++)
      for (let p = 0; p < S * S; p++) out[c * S * S + p] = (data[p * 3 + c] / 255 - o.mean[c]) / o.std[c];
    return out;
  }
}

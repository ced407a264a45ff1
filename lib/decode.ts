// One image of the image-folder dataset: decoded with sharp, MAE's augmentation (RandomResizedCrop
// drawn as torchvision draws it, bicubic resize, horizontal flip with probability ½) seeded by
// (seed, index) — or MAE's evaluation transform (short side resized, centre crop), or the whole
// image resized — normalized to float32 (3, S, S). The same code runs on the main thread and in the
// decode workers (folder-worker.ts), so a batch is bitwise the same whoever decodes it.
import sharp, { type Metadata } from 'sharp';
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';

/**
 * How an image becomes size × size: 'random', MAE's training augmentation (RandomResizedCrop, flip);
 * 'center', MAE's evaluation transform (short side resized, central crop); 'whole', the whole image
 * resized, aspect ratio not kept.
 */
export type FolderCrop = 'random' | 'center' | 'whole';

export const FOLDER_CROPS: readonly FolderCrop[] = ['random', 'center', 'whole'];

/** What a decode needs besides the file: plain data, so it can be posted to a worker. */
export interface DecodeOptions {
  size: number;
  crop: FolderCrop;
  scale: readonly [number, number];
  ratio: readonly [number, number];
  mean: readonly [number, number, number];
  std: readonly [number, number, number];
}

/** The augmentation drawn for one image: the crop box in the (EXIF-oriented) image and the flip. */
export interface CropParams {
  left: number;
  top: number;
  width: number;
  height: number;
  flip: boolean;
}

/**
 * The central size × size of the image resized as MAE evaluates (util/datasets.py
 * build_transform): crop_pct = 224/256 for size ≤ 224, else 1; the short side resized to
 * ⌊size / crop_pct⌋ and the long side in proportion, truncated (torchvision's Resize(int));
 * the crop's offsets rounded half to even (Python's round, torchvision's CenterCrop).
 */
export function centerCropGeometry(width: number, height: number, size: number):
  { resized: { width: number; height: number }; left: number; top: number } {
  const cropPct = size <= 224 ? 224 / 256 : 1;
  const short = Math.trunc(size / cropPct);
  const resized = width <= height
    ? { width: short, height: Math.trunc((short * height) / width) }
    : { width: Math.trunc((short * width) / height), height: short };
  return { resized, left: roundHalfEven((resized.width - size) / 2), top: roundHalfEven((resized.height - size) / 2) };
}

/** Python's round() for the halves (x − ½ and x + ½ go to the even one). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** sharp's message on one line: libvips repeats its decoder's lines, one per retry. */
export function sharpReason(err: unknown): string {
  const lines = String((err as Error)?.message ?? err).split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
  return [...new Set(lines)].join('; ') || 'unknown error';
}

/**
 * sharp's message when libvips' error text was lost: libvips keeps it in one buffer shared by all
 * threads, so a concurrent decode can clear it. A second try usually gets the decoder's words.
 */
export const WORDS_LOST = /^Unknown error$|:$/;

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

// (value / 255 − mean) / std for every byte value, per channel: the same float32 the per-pixel
// formula gives, looked up instead of computed (a third of the decode's JS time at 224²)
const tables = new Map<string, Float32Array[]>();
function normalizationTables(mean: readonly number[], std: readonly number[]): Float32Array[] {
  const key = `${mean.join(',')}/${std.join(',')}`;
  let t = tables.get(key);
  if (!t) {
    t = [0, 1, 2].map((c) => Float32Array.from({ length: 256 }, (_, v) => (v / 255 - mean[c]) / std[c]));
    tables.set(key, t);
  }
  return t;
}

/** The image's width and height once EXIF-oriented (0 where the header has none). */
export function orientedSize(meta: Metadata): { width: number; height: number } {
  return { width: meta.autoOrient?.width ?? meta.width ?? 0, height: meta.autoOrient?.height ?? meta.height ?? 0 };
}

/**
 * Decodes `file` (augmentation seeded by (seed, index)) into `out` at `offset`: 3·size² floats,
 * channel-major; `known`: its oriented size, read at open, which saves reading the header again.
 * Resolves with the crop drawn and the image's size; rejects with sharp's error when the file
 * does not decode.
 */
export async function decodeInto(file: string, index: number, seed: number, o: DecodeOptions,
  out: Float32Array, offset: number, known?: { width: number; height: number }): Promise<{ crop: CropParams; width: number; height: number }> {
  const S = o.size;
  const rng = xoroshiro128plus((seed * 0x9e3779b1 + index) | 0);
  const rand = () => uniformFloat64(rng);
  let img = sharp(file, { failOn: 'error' }).rotate();  // EXIF orientation
  const { width, height } = known?.width && known.height ? known : orientedSize(await img.metadata());
  if (!width || !height) throw new Error('no image dimensions');
  let box = { left: 0, top: 0, width, height };
  if (o.crop === 'center') {
    // resize then take the centre; the box reported is that centre in the image's pixels, rounded
    const g = centerCropGeometry(width, height, S);
    img = img.resize(g.resized.width, g.resized.height, { kernel: 'cubic', fit: 'fill' }).extract({ left: g.left, top: g.top, width: S, height: S });
    const sx = width / g.resized.width, sy = height / g.resized.height;
    box = { left: Math.round(g.left * sx), top: Math.round(g.top * sy), width: Math.round(S * sx), height: Math.round(S * sy) };
  } else {
    if (o.crop === 'random') img = img.extract(box = randomResizedCropBox(width, height, o.scale, o.ratio, rand));
    img = img.resize(S, S, { kernel: 'cubic', fit: 'fill' });
  }
  const flip = o.crop === 'random' && rand() < 0.5;
  if (flip) img = img.flop();
  const { data, info } = await img.removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || info.width !== S || info.height !== S) throw new Error(`unexpected decode ${info.width}×${info.height}×${info.channels}`);
  const [r, g, b] = normalizationTables(o.mean, o.std), plane = S * S;
  for (let p = 0, q = 0; p < plane; p++, q += 3) {
    out[offset + p] = r[data[q]];
    out[offset + plane + p] = g[data[q + 1]];
    out[offset + 2 * plane + p] = b[data[q + 2]];
  }
  return { crop: { ...box, flip }, width, height };
}

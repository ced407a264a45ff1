// A decode worker of ImageFolder (workers ≥ 2): decodes the images it is sent, each with
// decode.ts as the main thread would, and posts back the pixels (their buffer transferred, not
// copied) and the crop drawn, or sharp's reason. Several decodes are in flight at once (sharp runs
// them on libuv's pool); the JS around them — normalization above all — runs on this thread.
import { parentPort, workerData } from 'node:worker_threads';
import { decodeInto, sharpReason, type CropParams, type DecodeOptions } from './decode.js';

export interface DecodeJob {
  id: number;
  file: string;
  index: number;
  seed: number;
  /** the image's oriented size when known (0 × 0: read the header) */
  width: number;
  height: number;
  /** this image's crop or scale instead of the pool's */
  override?: Partial<Pick<DecodeOptions, 'crop' | 'scale'>>;
}

export type DecodeResult =
  | { id: number; ok: true; pixels: Float32Array; crop: CropParams; width: number; height: number }
  | { id: number; ok: false; reason: string };

const options = workerData as DecodeOptions;
const port = parentPort!;
port.on('message', async (job: DecodeJob) => {
  const pixels = new Float32Array(3 * options.size * options.size);
  let result: DecodeResult;
  try {
    const r = await decodeInto(job.file, job.index, job.seed, job.override ? { ...options, ...job.override } : options, pixels, 0, job);
    result = { id: job.id, ok: true, pixels, ...r };
  } catch (err) {
    result = { id: job.id, ok: false, reason: sharpReason(err) };
  }
  port.postMessage(result, result.ok ? [pixels.buffer] : []);
});

// Measuring what a pretrained encoder learned: a linear probe (a softmax classifier trained on
// frozen, standardized features with a cosine schedule), weighted kNN (cosine similarity, k = 20,
// temperature 0.07, as DINO), and the paper's consistency measure (how much the predictions of
// the same patch change between mask draws). Features come from model.encode().
import { xoroshiro128plus } from 'pure-rand/generator/xoroshiro128plus';
import { uniformInt } from 'pure-rand/distribution/uniformInt';
import { invalidRangeError, invalidTypeError } from './errors.js';
import { ParallelMasker } from './masker.js';
import type { EMAE } from './model.js';

export interface Features {
  /** (count, dim) row-major */
  x: Float32Array;
  labels: ArrayLike<number>;
  dim: number;
}

function check(name: string, f: Features): number {
  if (!(f?.x instanceof Float32Array)) throw invalidTypeError(`${name}.x`, 'Float32Array', f?.x);
  if (!Number.isInteger(f.dim) || f.dim < 1 || f.x.length % f.dim !== 0)
    throw invalidRangeError(`${name}.dim`, 'a positive integer dividing x.length', f.dim);
  const n = f.x.length / f.dim;
  if (f.labels.length !== n) throw invalidRangeError(`${name}.labels`, `${n} labels`, f.labels.length);
  return n;
}

export interface ProbeOptions {
  epochs?: number;    // default 30
  lr?: number;        // peak learning rate, cosine to 0 (default 0.1)
  batchSize?: number; // default 256
  weightDecay?: number; // default 0
  seed?: number;
  /** called after each epoch with the number of epochs done (progress) */
  onEpoch?: (done: number) => void;
}

/** Top-1 accuracy of a linear softmax classifier trained on standardized train features. */
export function linearProbe(train: Features, test: Features, options: ProbeOptions = {}): number {
  const n = check('train', train), m = check('test', test);
  if (test.dim !== train.dim) throw invalidRangeError('test.dim', `the train dim ${train.dim}`, test.dim);
  const D = train.dim;
  const classes = Math.max(...Array.from(train.labels), ...Array.from(test.labels)) + 1;
  const { epochs = 30, lr = 0.1, batchSize = 256, weightDecay = 0, seed = 0, onEpoch } = options;
  // standardize with the train statistics (BatchNorm without affine, as MAE's probe head)
  const mean = new Float64Array(D), std = new Float64Array(D);
  for (let i = 0; i < n; i++) for (let d = 0; d < D; d++) mean[d] += train.x[i * D + d] / n;
  for (let i = 0; i < n; i++) for (let d = 0; d < D; d++) std[d] += (train.x[i * D + d] - mean[d]) ** 2 / n;
  for (let d = 0; d < D; d++) std[d] = Math.sqrt(std[d] + 1e-6);
  const standardize = (x: Float32Array) => {
    const out = new Float64Array(x.length);
    for (let i = 0; i < out.length; i++) out[i] = (x[i] - mean[i % D]) / std[i % D];
    return out;
  };
  const ztrain = standardize(train.x), ztest = standardize(test.x);
  const W = new Float64Array(classes * D), b = new Float64Array(classes);
  const rng = xoroshiro128plus(seed);
  const order = Int32Array.from({ length: n }, (_, i) => i);
  const steps = epochs * Math.ceil(n / batchSize);
  const logits = new Float64Array(classes), gW = new Float64Array(classes * D), gb = new Float64Array(classes);
  let step = 0;
  for (let e = 0; e < epochs; e++) {
    for (let i = n - 1; i > 0; i--) {
      const j = uniformInt(rng, 0, i);
      [order[i], order[j]] = [order[j], order[i]];
    }
    for (let s = 0; s < n; s += batchSize, step++) {
      const rate = 0.5 * lr * (1 + Math.cos((Math.PI * step) / steps));
      gW.fill(0);
      gb.fill(0);
      const end = Math.min(n, s + batchSize);
      for (let t = s; t < end; t++) {
        const i = order[t];
        let mx = -Infinity;
        for (let c = 0; c < classes; c++) {
          let v = b[c];
          for (let d = 0; d < D; d++) v += W[c * D + d] * ztrain[i * D + d];
          logits[c] = v;
          mx = Math.max(mx, v);
        }
        let sum = 0;
        for (let c = 0; c < classes; c++) sum += (logits[c] = Math.exp(logits[c] - mx));
        for (let c = 0; c < classes; c++) {
          const g = logits[c] / sum - (c === train.labels[i] ? 1 : 0);
          gb[c] += g;
          for (let d = 0; d < D; d++) gW[c * D + d] += g * ztrain[i * D + d];
        }
      }
      const inv = 1 / (end - s);
      for (let k = 0; k < W.length; k++) W[k] -= rate * (gW[k] * inv + weightDecay * W[k]);
      for (let c = 0; c < classes; c++) b[c] -= rate * gb[c] * inv;
    }
    onEpoch?.(e + 1);
  }
  let correct = 0;
  for (let i = 0; i < m; i++) {
    let best = 0, bestV = -Infinity;
    for (let c = 0; c < classes; c++) {
      let v = b[c];
      for (let d = 0; d < D; d++) v += W[c * D + d] * ztest[i * D + d];
      if (v > bestV) [best, bestV] = [c, v];
    }
    if (best === test.labels[i]) correct++;
  }
  return correct / m;
}

/** Top-1 accuracy of weighted kNN: cosine similarity, the k nearest vote with exp(sim / T) (DINO). */
export function knnAccuracy(train: Features, test: Features, options: { k?: number; temperature?: number } = {}): number {
  const n = check('train', train), m = check('test', test);
  if (test.dim !== train.dim) throw invalidRangeError('test.dim', `the train dim ${train.dim}`, test.dim);
  const D = train.dim, k = Math.min(options.k ?? 20, n), T = options.temperature ?? 0.07;
  const classes = Math.max(...Array.from(train.labels), ...Array.from(test.labels)) + 1;
  const unit = (x: Float32Array, count: number) => {
    const out = new Float32Array(x.length);
    for (let i = 0; i < count; i++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += x[i * D + d] ** 2;
      const inv = 1 / Math.max(Math.sqrt(s), 1e-12);
      for (let d = 0; d < D; d++) out[i * D + d] = x[i * D + d] * inv;
    }
    return out;
  };
  const a = unit(train.x, n), q = unit(test.x, m);
  // the k best of each query kept sorted by insertion: O(n) per query for k ≪ n
  const topSim = new Float64Array(k), topIdx = new Int32Array(k), votes = new Float64Array(classes);
  let correct = 0;
  for (let i = 0; i < m; i++) {
    topSim.fill(-Infinity);
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += q[i * D + d] * a[j * D + d];
      if (s <= topSim[k - 1]) continue;
      let at = k - 1;
      while (at > 0 && topSim[at - 1] < s) {
        topSim[at] = topSim[at - 1];
        topIdx[at] = topIdx[at - 1];
        at--;
      }
      topSim[at] = s;
      topIdx[at] = j;
    }
    votes.fill(0);
    for (let r = 0; r < k; r++) votes[train.labels[topIdx[r]]] += Math.exp(topSim[r] / T);
    let best = 0;
    for (let c = 1; c < classes; c++) if (votes[c] > votes[best]) best = c;
    if (best === test.labels[i]) correct++;
  }
  return correct / m;
}

/**
 * The consistency measure: for each image, `draws` different mask draws; for every patch, the
 * mean squared distance (per pixel) between its reconstructions in pairs of parts and draws that
 * mask it. 0 when the predictions do not depend on the mask.
 */
export async function consistencyMeasure(model: EMAE, images: Float32Array, options: { draws?: number; seed?: number } = {}): Promise<number> {
  const c = model.config, per = c.channels * c.imageSize * c.imageSize;
  const B = images.length / per;
  if (!Number.isInteger(B) || B < 1) throw invalidRangeError('images', `a whole number of ${per}-value images`, images.length);
  const draws = options.draws ?? 4;
  if (!Number.isInteger(draws) || draws < 2) throw invalidRangeError('draws', 'integer >= 2', draws);
  const masker = new ParallelMasker({ numPatches: c.numPatches, partsTotal: c.partsTotal, parts: c.parts, seed: options.seed ?? 0 });
  const K = c.parts, N = c.numPatches, p = c.patchSize, S = c.imageSize, grid = S / p;
  // per (b, n): the masked reconstructions from every draw and part
  const recon: Float32Array[][] = Array.from({ length: B * N }, () => []);
  for (let draw = 0; draw < draws; draw++) {
    const r = await model.reconstruct(images, { permutation: masker.next(B) });
    for (let b = 0; b < B; b++)
      for (let k = 0; k < K; k++)
        for (let n = 0; n < N; n++) {
          if (r.visible[(b * K + k) * N + n]) continue;
          const gy = Math.floor(n / grid), gx = n % grid, patch = new Float32Array(c.patchDim);
          let q = 0;
          for (let ch = 0; ch < c.channels; ch++)
            for (let i = 0; i < p; i++)
              for (let j = 0; j < p; j++) patch[q++] = r.parts[(b * K + k) * per + (ch * S + gy * p + i) * S + gx * p + j];
          recon[b * N + n].push(patch);
        }
  }
  let total = 0, pairs = 0;
  for (const list of recon)
    for (let i = 0; i < list.length; i++)
      for (let j = i + 1; j < list.length; j++) {
        let s = 0;
        for (let q = 0; q < c.patchDim; q++) s += (list[i][q] - list[j][q]) ** 2;
        total += s / c.patchDim;
        pairs++;
      }
  return pairs ? total / pairs : 0;
}

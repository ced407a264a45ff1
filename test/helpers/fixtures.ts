// Loads the golden fixtures written by scripts/make_golden.py (a float64 PyTorch reference of
// DESIGN.md §1): images, permutation, param.* (the model's starting point), grad.* (gradients of
// the loss), after.* (parameters after one AdamW step), and the config and losses as metadata.
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors } from '../../lib/safetensors.js';

export const fixtureDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');

export interface Golden {
  name: string;
  config: Record<string, unknown> & { batchSize: number; consistencyWeight?: number };
  images: Float32Array;
  permutation: Int32Array;
  params: Record<string, Float32Array>;
  grads: Record<string, Float32Array>;
  after: Record<string, Float32Array>;
  loss: number;
  recon: number;
  consistency: number;
  optim: { lr: number; weightDecay: number; beta1: number; beta2: number; eps: number };
}

export function goldenNames(): string[] {
  return readdirSync(fixtureDir).filter((f) => f.startsWith('golden-') && f.endsWith('.safetensors')).sort();
}

export function loadGolden(file: string): Golden {
  const { tensors, metadata } = readSafetensors(readFileSync(path.join(fixtureDir, file)));
  const pick = (prefix: string) => {
    const out: Record<string, Float32Array> = {};
    for (const [k, t] of Object.entries(tensors)) if (k.startsWith(prefix)) out[k.slice(prefix.length)] = t.data as Float32Array;
    return out;
  };
  const { batchSize, ...config } = JSON.parse(metadata.config) as Golden['config'];
  return {
    name: file.replace(/^golden-|\.safetensors$/g, ''),
    config: { ...config, batchSize },
    images: tensors.images.data as Float32Array,
    permutation: tensors.permutation.data as Int32Array,
    params: pick('param.'),
    grads: pick('grad.'),
    after: pick('after.'),
    loss: Number(metadata.loss),
    recon: Number(metadata.recon),
    consistency: Number(metadata.consistency),
    optim: {
      lr: Number(metadata.lr), weightDecay: Number(metadata.weightDecay),
      beta1: Number(metadata.beta1), beta2: Number(metadata.beta2), eps: Number(metadata.eps),
    },
  };
}

/** ‖a − b‖₂ / ‖b‖₂ (b the reference). */
export function relativeL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new RangeError(`length ${a.length} vs ${b.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

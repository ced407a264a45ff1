// Loads the fine-tuning golden fixtures written by scripts/make_finetune_golden.py (a float64
// PyTorch reference of DESIGN.md §3b, MAE's models_vit.VisionTransformer): images, labels or
// soft targets, param.* (the whole state dict to load), grad.* (gradients of the loss, every
// tensor being trainable), after.* (the state after one AdamW step with layer-wise lr decay),
// and the config, loss, gradient norm and optimizer settings as metadata.
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { readSafetensors } from '../../lib/safetensors.js';
import { fixtureDir } from './fixtures.js';

/** The Classifier config keys the fixtures were made with, plus the batch size. */
export interface FinetuneGoldenConfig {
  imageSize: number;
  patchSize: number;
  channels: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  numClasses: number;
  globalPool: boolean;
  labelSmoothing: number;
  dropPath: number;
  batchSize: number;
}

export interface FinetuneGolden {
  name: string;
  config: FinetuneGoldenConfig;
  images: Float32Array;
  /** [B] class ids (labelSmoothing applies), or ... */
  labels?: Int32Array;
  /** [B, numClasses] soft targets, used as given */
  targets?: Float32Array;
  params: Record<string, Float32Array>;
  grads: Record<string, Float32Array>;
  after: Record<string, Float32Array>;
  loss: number;
  /** global L2 norm of all the gradients */
  gradNorm: number;
  optim: { lr: number; weightDecay: number; layerDecay: number; beta1: number; beta2: number; eps: number };
}

export function finetuneGoldenNames(): string[] {
  return readdirSync(fixtureDir).filter((f) => f.startsWith('finetune-golden-') && f.endsWith('.safetensors')).sort();
}

export function loadFinetuneGolden(file: string): FinetuneGolden {
  const { tensors, metadata } = readSafetensors(readFileSync(path.join(fixtureDir, file)));
  const pick = (prefix: string) => {
    const out: Record<string, Float32Array> = {};
    for (const [k, t] of Object.entries(tensors)) if (k.startsWith(prefix)) out[k.slice(prefix.length)] = t.data as Float32Array;
    return out;
  };
  return {
    name: file.replace(/^finetune-golden-|\.safetensors$/g, ''),
    config: JSON.parse(metadata.config) as FinetuneGoldenConfig,
    images: tensors.images.data as Float32Array,
    ...(tensors.labels ? { labels: tensors.labels.data as Int32Array } : {}),
    ...(tensors.targets ? { targets: tensors.targets.data as Float32Array } : {}),
    params: pick('param.'),
    grads: pick('grad.'),
    after: pick('after.'),
    loss: Number(metadata.loss),
    gradNorm: Number(metadata.gradNorm),
    optim: {
      lr: Number(metadata.lr), weightDecay: Number(metadata.weightDecay), layerDecay: Number(metadata.layerDecay),
      beta1: Number(metadata.beta1), beta2: Number(metadata.beta2), eps: Number(metadata.eps),
    },
  };
}

// Model presets. The vit-* ones are MAE's (DESIGN §1): 224×224 RGB, patch 16 (vit-huge: 14),
// mlpRatio 4, written embedDim/depth/heads (decoderEmbedDim/decoderDepth/decoderHeads).
// cpu-tiny and cpu-small are small enough to train on a CPU in the examples and tests.
// Keys given next to `preset` in a config override the preset's.

/** The architecture keys a preset fixes (any model config key may appear). */
export interface PresetConfig {
  readonly imageSize: number;
  readonly patchSize: number;
  readonly channels: number;
  readonly embedDim: number;
  readonly depth: number;
  readonly numHeads: number;
  readonly decoderEmbedDim: number;
  readonly decoderDepth: number;
  readonly decoderNumHeads: number;
  readonly mlpRatio: number;
  readonly maskRatio?: number;
  readonly parts?: number;
}

export const presetNames = ['vit-tiny', 'vit-small', 'vit-base', 'vit-large', 'vit-huge', 'cpu-tiny', 'cpu-small'] as const;
export type PresetName = (typeof presetNames)[number];

function vit(patchSize: number, embedDim: number, depth: number, numHeads: number,
  decoderEmbedDim: number, decoderDepth: number, decoderNumHeads: number): PresetConfig {
  return Object.freeze({
    imageSize: 224, patchSize, channels: 3, embedDim, depth, numHeads,
    decoderEmbedDim, decoderDepth, decoderNumHeads, mlpRatio: 4,
  });
}

export const presets: Readonly<Record<PresetName, PresetConfig>> = Object.freeze({
  'vit-tiny': vit(16, 192, 12, 3, 128, 4, 4),
  'vit-small': vit(16, 384, 12, 6, 256, 4, 8),
  'vit-base': vit(16, 768, 12, 12, 512, 8, 16),
  'vit-large': vit(16, 1024, 24, 16, 512, 8, 16),
  'vit-huge': vit(14, 1280, 32, 16, 512, 8, 16),
  'cpu-tiny': Object.freeze({
    imageSize: 32, patchSize: 4, channels: 3, embedDim: 192, depth: 12, numHeads: 3,
    decoderEmbedDim: 128, decoderDepth: 4, decoderNumHeads: 4, mlpRatio: 4, maskRatio: 0.75,
  }),
  'cpu-small': Object.freeze({
    imageSize: 64, patchSize: 8, channels: 3, embedDim: 384, depth: 12, numHeads: 6,
    decoderEmbedDim: 256, decoderDepth: 4, decoderNumHeads: 8, mlpRatio: 4, maskRatio: 0.75,
  }),
});

export function isPresetName(name: unknown): name is PresetName {
  return typeof name === 'string' && (presetNames as readonly string[]).includes(name);
}

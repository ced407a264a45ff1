// Model config: defaults, derived sizes (DESIGN §1), presets, and one case per bad-config error
// (class + the key named in the message).
import test from 'ava';
import { resolveConfig, type EMAEConfig } from '../lib/config.js';
import { presetNames, presets } from '../lib/presets.js';

const tiny: EMAEConfig = {
  imageSize: 8, patchSize: 2, channels: 3, embedDim: 16, depth: 1, numHeads: 2,
  decoderEmbedDim: 8, decoderDepth: 1, decoderNumHeads: 2,
};

// ---- normal cases -----------------------------------------------------------------------------

test('defaults and derived sizes', (t) => {
  const c = resolveConfig(tiny);
  t.like(c, {
    mlpRatio: 4, maskRatio: 0.75, normPixLoss: true, consistencyWeight: 1, consistencyDistance: 'mse',
    layerNormEps: 1e-6, device: 'auto', seed: 0,
    numPatches: 16, patchDim: 12, partsTotal: 4, visiblePerPart: 4, parts: 4,
  });
  t.false('threads' in c);
  t.false('preset' in c);
});

test('channels defaults to 3', (t) => {
  const { channels, ...rest } = tiny;
  t.is(channels, 3);
  t.is(resolveConfig(rest).channels, 3);
  t.is(resolveConfig({ ...tiny, channels: 1 }).patchDim, 4);
});

test('explicit values are kept', (t) => {
  const c = resolveConfig({
    ...tiny, maskRatio: 0.5, parts: 1, normPixLoss: false, consistencyWeight: 0.25, consistencyDistance: 'l1',
    layerNormEps: 1e-5, device: 'cpu', seed: 0xffffffff, threads: 3, mlpRatio: 2,
  });
  t.like(c, {
    maskRatio: 0.5, partsTotal: 2, visiblePerPart: 8, parts: 1, normPixLoss: false, consistencyWeight: 0.25,
    consistencyDistance: 'l1', layerNormEps: 1e-5, device: 'cpu', seed: 0xffffffff, threads: 3, mlpRatio: 2,
  });
});

test('K_total = round(1/(1-maskRatio))', (t) => {
  // N = 20 * 20 = 400 patches, divisible by 2, 4, 5, 8, 10
  const base = { ...tiny, imageSize: 40 };
  t.is(resolveConfig({ ...base, maskRatio: 0.5 }).partsTotal, 2);
  t.is(resolveConfig({ ...base, maskRatio: 0.75 }).partsTotal, 4);
  t.like(resolveConfig({ ...base, maskRatio: 0.8 }), { partsTotal: 5, visiblePerPart: 80, parts: 5 });
  t.is(resolveConfig({ ...base, maskRatio: 0.875 }).partsTotal, 8);
  t.is(resolveConfig({ ...base, maskRatio: 0.9 }).partsTotal, 10);
  // rounding: 1/(1-0.76) = 4.17 -> 4
  t.is(resolveConfig({ ...base, maskRatio: 0.76 }).partsTotal, 4);
});

test('undefined counts as not given', (t) => {
  const c = resolveConfig({ ...tiny, maskRatio: undefined, seed: undefined });
  t.is(c.maskRatio, 0.75);
  t.is(c.seed, 0);
});

test('every preset resolves, with the DESIGN sizes', (t) => {
  for (const name of presetNames) {
    const c = resolveConfig({ preset: name });
    t.is(c.numPatches % c.partsTotal, 0, name);
    t.is(c.embedDim % c.numHeads, 0, name);
  }
  t.like(resolveConfig({ preset: 'vit-base' }), {
    imageSize: 224, patchSize: 16, channels: 3, embedDim: 768, depth: 12, numHeads: 12,
    decoderEmbedDim: 512, decoderDepth: 8, decoderNumHeads: 16, mlpRatio: 4, numPatches: 196, patchDim: 768,
    partsTotal: 4, visiblePerPart: 49,
  });
  t.like(resolveConfig({ preset: 'vit-huge' }), { patchSize: 14, embedDim: 1280, depth: 32, numHeads: 16, numPatches: 256 });
  t.like(resolveConfig({ preset: 'vit-tiny' }), { embedDim: 192, depth: 12, numHeads: 3, decoderEmbedDim: 128, decoderDepth: 4, decoderNumHeads: 4 });
  t.like(resolveConfig({ preset: 'vit-small' }), { embedDim: 384, numHeads: 6, decoderEmbedDim: 256, decoderNumHeads: 8 });
  t.like(resolveConfig({ preset: 'vit-large' }), { embedDim: 1024, depth: 24, numHeads: 16, decoderEmbedDim: 512 });
  t.like(resolveConfig({ preset: 'cpu-tiny' }), { imageSize: 32, patchSize: 4, numPatches: 64, parts: 4, visiblePerPart: 16 });
  t.like(resolveConfig({ preset: 'cpu-small' }), { imageSize: 64, patchSize: 8, embedDim: 384, decoderEmbedDim: 256, numPatches: 64 });
});

test('explicit keys override the preset', (t) => {
  const c = resolveConfig({ preset: 'cpu-tiny', depth: 2, parts: 2, seed: 7 });
  t.like(c, { depth: 2, parts: 2, seed: 7, embedDim: 192 });
});

test('presets are frozen', (t) => {
  t.true(Object.isFrozen(presets));
  t.true(Object.isFrozen(presets['vit-base']));
});

test('the input is not modified', (t) => {
  const input = { preset: 'cpu-tiny' as const, depth: 2 };
  resolveConfig(input);
  t.deepEqual(input, { preset: 'cpu-tiny', depth: 2 });
});

// ---- bad calls --------------------------------------------------------------------------------

interface Bad { title: string; config: unknown; error: typeof TypeError | typeof RangeError; mentions: RegExp[] }

const bad: Bad[] = [
  { title: 'not an object', config: 5, error: TypeError, mentions: [/config/] },
  { title: 'null', config: null, error: TypeError, mentions: [/config/] },
  { title: 'unknown key', config: { ...tiny, foo: 1 }, error: TypeError, mentions: [/"foo"/, /Unknown config key/] },
  { title: 'snake_case key suggests camelCase', config: { ...tiny, embed_dim: 16 }, error: TypeError, mentions: [/"embed_dim"/, /"embedDim"/] },
  { title: 'missing required key', config: { ...tiny, embedDim: undefined }, error: TypeError, mentions: [/embedDim/, /undefined/] },
  { title: 'imageSize of the wrong type', config: { ...tiny, imageSize: '8' }, error: TypeError, mentions: [/imageSize/, /positive integer/] },
  { title: 'patchSize 0', config: { ...tiny, patchSize: 0 }, error: RangeError, mentions: [/Expected positive integer for patchSize but received 0/] },
  { title: 'depth not an integer', config: { ...tiny, depth: 1.5 }, error: RangeError, mentions: [/depth/, /1\.5/] },
  { title: 'channels NaN', config: { ...tiny, channels: Number.NaN }, error: RangeError, mentions: [/channels/, /NaN/] },
  { title: 'imageSize not divisible by patchSize', config: { ...tiny, patchSize: 3 }, error: RangeError, mentions: [/imageSize/, /patchSize/, /divisible/] },
  { title: 'embedDim not divisible by numHeads', config: { ...tiny, numHeads: 3 }, error: RangeError, mentions: [/embedDim/, /numHeads/] },
  { title: 'decoderEmbedDim not divisible by decoderNumHeads', config: { ...tiny, decoderNumHeads: 3 }, error: RangeError, mentions: [/decoderEmbedDim/, /decoderNumHeads/] },
  { title: 'embedDim not a multiple of 4', config: { ...tiny, embedDim: 6, numHeads: 2 }, error: RangeError, mentions: [/embedDim/, /multiple of 4/] },
  { title: 'decoderEmbedDim not a multiple of 4', config: { ...tiny, decoderEmbedDim: 10, decoderNumHeads: 2 }, error: RangeError, mentions: [/decoderEmbedDim/, /multiple of 4/] },
  { title: 'maskRatio 0', config: { ...tiny, maskRatio: 0 }, error: RangeError, mentions: [/maskRatio/, /\(0, 1\)/] },
  { title: 'maskRatio 1', config: { ...tiny, maskRatio: 1 }, error: RangeError, mentions: [/maskRatio/] },
  { title: 'maskRatio negative', config: { ...tiny, maskRatio: -0.5 }, error: RangeError, mentions: [/maskRatio/] },
  { title: 'maskRatio a string', config: { ...tiny, maskRatio: '0.75' }, error: TypeError, mentions: [/maskRatio/] },
  { title: 'maskRatio so low that nothing is masked', config: { ...tiny, maskRatio: 0.2 }, error: RangeError, mentions: [/maskRatio/, /K_total=1/] },
  { title: 'N % K_total != 0', config: { ...tiny, maskRatio: 0.8 }, error: RangeError, mentions: [/N=16 patches do not split into K_total=5 parts/, /maskRatio/] },
  { title: 'parts 0', config: { ...tiny, parts: 0 }, error: RangeError, mentions: [/parts/] },
  { title: 'parts above K_total', config: { ...tiny, parts: 5 }, error: RangeError, mentions: [/parts/, /K_total=4/] },
  { title: 'mlpRatio giving a fractional hidden size', config: { ...tiny, mlpRatio: 4.1 }, error: RangeError, mentions: [/mlpRatio/, /embedDim/] },
  { title: 'mlpRatio fractional for the decoder only', config: { ...tiny, mlpRatio: 2.0625 }, error: RangeError, mentions: [/mlpRatio/, /decoderEmbedDim/] },
  { title: 'mlpRatio 0', config: { ...tiny, mlpRatio: 0 }, error: RangeError, mentions: [/mlpRatio/] },
  { title: 'normPixLoss not a boolean', config: { ...tiny, normPixLoss: 1 }, error: TypeError, mentions: [/normPixLoss/, /boolean/] },
  { title: 'consistencyWeight negative', config: { ...tiny, consistencyWeight: -1 }, error: RangeError, mentions: [/consistencyWeight/] },
  { title: 'consistencyWeight Infinity', config: { ...tiny, consistencyWeight: Infinity }, error: RangeError, mentions: [/consistencyWeight/] },
  { title: 'consistencyDistance unknown', config: { ...tiny, consistencyDistance: 'l2' }, error: RangeError, mentions: [/consistencyDistance/, /'mse' or 'l1'/] },
  { title: 'layerNormEps 0', config: { ...tiny, layerNormEps: 0 }, error: RangeError, mentions: [/layerNormEps/] },
  { title: 'device unknown', config: { ...tiny, device: 'gpu' }, error: RangeError, mentions: [/device/, /"gpu"/] },
  { title: 'device not a string', config: { ...tiny, device: 1 }, error: TypeError, mentions: [/device/] },
  { title: 'seed negative', config: { ...tiny, seed: -1 }, error: RangeError, mentions: [/seed/, /uint32/] },
  { title: 'seed above uint32', config: { ...tiny, seed: 2 ** 32 }, error: RangeError, mentions: [/seed/] },
  { title: 'seed a bigint', config: { ...tiny, seed: 1n }, error: TypeError, mentions: [/seed/] },
  { title: 'threads 0', config: { ...tiny, threads: 0 }, error: RangeError, mentions: [/threads/] },
  { title: 'unknown preset', config: { preset: 'vit-xl' }, error: RangeError, mentions: [/preset/, /"vit-xl"/, /vit-base/] },
  { title: 'preset not a string', config: { preset: 3 }, error: TypeError, mentions: [/preset/] },
  { title: 'bad override of a preset', config: { preset: 'cpu-tiny', numHeads: 5 }, error: RangeError, mentions: [/embedDim/, /numHeads/] },
];

for (const b of bad) {
  test(`bad config: ${b.title}`, (t) => {
    const err = t.throws(() => resolveConfig(b.config), { instanceOf: b.error });
    for (const re of b.mentions) t.regex(err!.message, re);
    // the exact class, not a subclass of the other
    t.is(err!.constructor, b.error);
  });
}

test('a preset with only the mask ratio changed uses all parts of the new ratio', (t) => {
  t.like(resolveConfig({ preset: 'cpu-tiny', maskRatio: 0.5 }), { partsTotal: 2, parts: 2 });
});

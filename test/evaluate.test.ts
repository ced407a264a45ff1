// encode and reconstruct: features do not depend on the rest of the batch, both pools have the
// right shape; reconstructions paste the visible patches back exactly and un-normalize with each
// patch's own statistics (checked with a decoder whose predictions are all zero).
import test from 'ava';
import { EMAE, ParallelMasker, type EMAEConfig } from '../lib/index.js';
import { gratings } from './helpers/synthetic.js';

const config: EMAEConfig = {
  imageSize: 8, patchSize: 2, channels: 3, embedDim: 16, depth: 2, numHeads: 2, decoderEmbedDim: 8,
  decoderDepth: 1, decoderNumHeads: 2, maskRatio: 0.75, device: 'cpu', threads: 2, seed: 4,
};
const per = 3 * 8 * 8;
const images = gratings(3, 3, 8, 9);

test("encode: an image's features do not depend on the other images; cls and mean pools", async (t) => {
  const model = await EMAE.create(config);
  const all = await model.encode(images);
  t.is(all.length, 3 * 16);
  const alone = await model.encode(images.slice(per, 2 * per));
  t.deepEqual(alone, all.slice(16, 32));
  const mean = await model.encode(images, { pool: 'mean' });
  t.is(mean.length, 3 * 16);
  t.notDeepEqual(mean, all);
  await t.throwsAsync(model.encode(images, { pool: 'max' as any }), { instanceOf: RangeError, message: /pool/ });
  await t.throwsAsync(model.encode(new Float64Array(per) as any), { instanceOf: TypeError, message: /images/ });
  await t.throwsAsync(model.encode(new Float32Array(per + 1)), { instanceOf: RangeError, message: /batchSize/ });
  await model.dispose();
});

for (const normPixLoss of [true, false]) {
  test(`reconstruct (normPixLoss ${normPixLoss}): visible patches exact, predictions un-normalized per patch`, async (t) => {
    const model = await EMAE.create({ ...config, normPixLoss });
    const state = await model.stateDict();
    await model.loadStateDict({ ...state, 'decoder_pred.weight': new Float32Array(state['decoder_pred.weight'].length),
      'decoder_pred.bias': new Float32Array(state['decoder_pred.bias'].length) });  // every prediction is 0
    const permutation = new ParallelMasker({ numPatches: 16, partsTotal: 4, seed: 2 }).next(3);
    const r = await model.reconstruct(images, { permutation });
    t.is(r.parts.length, 3 * 4 * per);
    t.is(r.assembled.length, 3 * per);
    for (let bk = 0; bk < 12; bk++) t.is(r.visible.subarray(bk * 16, (bk + 1) * 16).reduce((a, v) => a + v, 0), 4);
    for (let b = 0; b < 3; b++)
      for (let k = 0; k < 4; k++)
        for (let n = 0; n < 16; n++) {
          const gy = Math.floor(n / 4), gx = n % 4;
          const pixels: number[] = [];
          for (let ch = 0; ch < 3; ch++) for (let i = 0; i < 2; i++) for (let j = 0; j < 2; j++) pixels.push((ch * 8 + gy * 2 + i) * 8 + gx * 2 + j);
          const mean = pixels.reduce((a, q) => a + images[b * per + q], 0) / 12;
          const vis = r.visible[(b * 4 + k) * 16 + n] === 1;
          for (const q of pixels) {
            const got = r.parts[(b * 4 + k) * per + q];
            const want = vis ? images[b * per + q] : normPixLoss ? mean : 0;
            t.true(Math.abs(got - want) < 1e-6, `b ${b} part ${k} patch ${n} ${vis ? 'visible' : 'masked'}: ${got} vs ${want}`);
          }
          if (k === 0) for (const q of pixels) t.true(Math.abs(r.assembled[b * per + q] - (normPixLoss ? mean : 0)) < 1e-6);
        }
    await model.dispose();
  });
}

// two Gaussian-ish clusters per class in 8-D, linearly separable by construction
function separable(count: number, seed: number, shuffle = false) {
  let s = seed;
  const rand = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const dim = 8, x = new Float32Array(count * dim), labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const c = i % 3;
    labels[i] = c;
    for (let d = 0; d < dim; d++) x[i * dim + d] = (d === c ? 4 : 0) + (rand() - 0.5);
  }
  if (shuffle) for (let i = count - 1; i > 0; i--) { const j = Math.floor(rand() * (i + 1)); [labels[i], labels[j]] = [labels[j], labels[i]]; }
  return { x, labels, dim };
}

test('linear probe and kNN: near-perfect on a separable set, chance on shuffled labels', async (t) => {
  const { knnAccuracy, linearProbe } = await import('../lib/index.js');
  const train = separable(300, 1), test_ = separable(150, 2);
  t.true(linearProbe(train, test_, { epochs: 20 }) > 0.97);
  t.true(knnAccuracy(train, test_) > 0.97);
  const shuffled = separable(300, 1, true), shuffledTest = separable(300, 3, true);
  const probe = linearProbe(shuffled, shuffledTest, { epochs: 20 }), knn = knnAccuracy(shuffled, shuffledTest);
  t.log(`shuffled labels: probe ${probe.toFixed(3)}, kNN ${knn.toFixed(3)} (chance 0.333)`);
  t.true(Math.abs(probe - 1 / 3) < 0.12 && Math.abs(knn - 1 / 3) < 0.12);
  t.throws(() => linearProbe({ x: new Float32Array(5), labels: [0], dim: 2 }, test_), { instanceOf: RangeError, message: /dim/ });
});

test('the consistency measure is zero for a model whose predictions do not depend on the mask', async (t) => {
  const { consistencyMeasure } = await import('../lib/index.js');
  const model = await EMAE.create(config);
  const before = await consistencyMeasure(model, images, { draws: 3, seed: 1 });
  t.true(before > 0, 'a random model does depend on the mask');
  const state = await model.stateDict();
  await model.loadStateDict({ ...state, 'decoder_pred.weight': new Float32Array(state['decoder_pred.weight'].length) });
  t.is(await consistencyMeasure(model, images, { draws: 3, seed: 1 }), 0);
  await model.dispose();
});

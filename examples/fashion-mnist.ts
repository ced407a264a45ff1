// EMAE pretraining on Fashion-MNIST (60k 28×28 grey images), padded to 32×32 so that the 8×8
// grid of 4×4 patches splits into K = 4 parts of 16.
//   node --import=tsx examples/fashion-mnist.ts [--steps 300] [--batch 64] [--out runs/fashion-mnist] [--dir DIR]
// The data: Debian's package puts it in /usr/share/datasets/fashion-mnist
//   (sudo apt-get install dataset-fashion-mnist), or pass --dir with the four IDX .gz files from
//   https://github.com/zalandoresearch/fashion-mnist.
// (In your project: import { … } from 'emae'.)
import { existsSync } from 'node:fs';
import path from 'node:path';
import { EMAE, Trainer, loadIdx, lossCurvesSvg, readStepLog, writeChart } from '../lib/index.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}
const dir = arg('dir', '/usr/share/datasets/fashion-mnist');
const images = path.join(dir, 'train-images-idx3-ubyte.gz'), labels = path.join(dir, 'train-labels-idx1-ubyte.gz');
if (!existsSync(images)) {
  console.error(`Fashion-MNIST not found at ${dir}.\nInstall Debian's package (sudo apt-get install dataset-fashion-mnist) ` +
    'or download the IDX files from https://github.com/zalandoresearch/fashion-mnist and pass --dir.');
  process.exit(2);
}
const data = await loadIdx(images, { labelsFile: labels, padTo: 32, normalization: { mean: [0.286], std: [0.353] } });
console.log(`Fashion-MNIST: ${data.count} images, padded to ${data.size}×${data.size}`);

const model = await EMAE.create({
  imageSize: 32, patchSize: 4, channels: 1, embedDim: 192, depth: 6, numHeads: 3,
  decoderEmbedDim: 128, decoderDepth: 2, decoderNumHeads: 4, maskRatio: 0.75, device: 'auto', seed: 0,
});
const steps = Number(arg('steps', '300')), out = arg('out', path.join('runs', 'fashion-mnist'));
const trainer = new Trainer(model, data, {
  batchSize: Number(arg('batch', '64')), steps, blr: 1.5e-3, warmupSteps: Math.ceil(steps / 10), outDir: out,
  checkpointEvery: 100,
  overwrite: true,  // an example starts over each time; your own runs keep the default (refuse a non-empty folder)
  onStep: (s) => {
    if (s.step % 10 === 0 || s.step === steps)
      console.log(`step ${s.step}/${steps} epoch ${s.epoch} loss ${s.loss.toFixed(4)} recon ${s.recon.toFixed(4)} ` +
        `consistency ${s.consistency.toFixed(4)} lr ${s.lr.toExponential(2)} ${s.imagesPerSecond.toFixed(0)} img/s`);
  },
});
const { removed } = await trainer.prepareOutDir();
if (removed.length > 0) console.log(`starting over in ${out}: deleted ${removed.join(', ')}`);
await trainer.run();
// the loss curves next to the log, as the CLI draws them
await writeChart(await lossCurvesSvg({ 'fashion-mnist': await readStepLog(path.join(out, 'log.jsonl')) }), path.join(out, 'curves'));
console.log(`done on ${model.device}: log.jsonl, curves.svg/png and checkpoints in ${out}`);
await model.dispose();

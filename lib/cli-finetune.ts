// The fine-tuning commands of the emae CLI (registered by lib/cli.ts):
//   emae finetune --weights <pretrained> --data <labelled> --test-data <labelled> [MAE's options]
//   emae evaluate --weights <fine-tuned> --data <labelled>
// Labelled data is held in memory (idx:, cifar10:, synthetic) or an image folder with class
// sub-folders (folder:), decoded batch by batch.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { Option, type Command } from 'commander';
import { CLASSIFIER_CONFIG_KEY, Classifier, type ClassifierConfig } from './classifier.js';
import type { LabelledImageSet } from './data.js';
import { FineTuner, assertClassFolders, top1Accuracy, type FinetuneData } from './finetune.js';
import { ImageFolder } from './folder.js';
import { presetNames } from './presets.js';
import { parseRandAugmentConfig } from './rand-augment.js';
import { readSafetensorsMetadata } from './safetensors.js';
import { readSavedConfig } from './weights-file.js';

export interface CliShared {
  num: (name: string) => (v: string) => number;
  /** a non-negative integer option (--workers, --prefetch) */
  count: (name: string) => (v: string) => number;
  /** the data of a --data spec: labelled and in memory, or an ImageFolder (opened at imageSize with these folder options) */
  loadData: (spec: string, padTo: number | undefined, imageSize: number, channels: number, seed: number,
    folderOptions?: { workers?: number; limit?: number }) => Promise<unknown>;
  /** --workers, or its default for this machine */
  decodeWorkers: (requested: number | undefined) => { workers: number; cpus: number };
  /** a line on stderr when libuv's pool is smaller than the decode workers */
  warnThreadPool: (data: unknown, cpus: number) => void;
  /** progress of a long phase on stderr: the update function */
  progress: (what: string, total: number) => (done: number) => void;
}

const WORKERS_HELP = 'folder: data: decode threads (0 or 1 = the main thread; default: this machine\'s CPUs, 0 where that is 2 or less)';
const LIMIT_HELP = (what: string) => `use the first n ${what} (a folder: n files spread evenly over its class sub-folders)`;

/** Labelled data from a spec — in memory, or an image folder at the model's size — or a sentence saying why it cannot be used. */
async function labelledData(shared: CliShared, spec: string, flag: string, o: { padTo?: number; seed?: number; limit?: number; workers?: number },
  size: number, channels: number): Promise<FinetuneData> {
  if (o.limit !== undefined && !(Number.isInteger(o.limit) && o.limit >= 1)) throw new Error(`--limit expects a positive integer, got ${o.limit}`);
  if (spec.startsWith('folder:')) {
    if (o.padTo !== undefined) throw new Error(`--pad-to pads IDX/CIFAR images; the images of ${flag} ${spec} are resized to the model's ${size}×${size}`);
    return await shared.loadData(spec, undefined, size, 3, o.seed ?? 0,
      { workers: o.workers, ...(o.limit !== undefined ? { limit: o.limit } : {}) }) as ImageFolder;
  }
  const d = await shared.loadData(spec, o.padTo, size, channels, o.seed ?? 0) as LabelledImageSet;
  if (!d.labels) throw new Error(`${flag} ${spec}: the data has no labels (for IDX data give the labels file: idx:<images>,<labels>)`);
  if (o.limit === undefined || o.limit >= d.count) return d;
  const per = d.channels * d.size * d.size;  // the first `limit` images
  return { ...d, count: o.limit, images: d.images.subarray(0, o.limit * per), labels: d.labels.subarray(0, o.limit) };
}

export function registerFinetuneCommands(program: Command, shared: CliShared): void {
  const { num, count } = shared;
  program
    .command('finetune')
    .description('fine-tune a pretrained encoder as a classifier (MAE\'s recipe); prints test top-1 every epoch, logs to <out>/log.jsonl, checkpoints to <out>')
    .option('--weights <file>', 'pretraining weights or checkpoint (the encoder is taken, the decoder dropped); none: from scratch')
    .requiredOption('--data <spec>', 'labelled training data: folder:<dir> (<dir>/<class>/<image>) | idx:<images>,<labels> | cifar10:<file>[,<file>…] | synthetic[:count]')
    .option('--test-data <spec>', 'labelled test data, scored every epoch (same forms; a folder with MAE\'s resize + centre crop)')
    .addOption(new Option('--preset <name>', 'model preset (without --weights)').choices([...presetNames]))
    .option('--config <file>', 'model config as JSON (without --weights)')
    .option('--pad-to <n>', 'zero-pad IDX/CIFAR images to this size', num('pad-to'))
    .option('--limit <n>', LIMIT_HELP('training and test images'), num('limit'))
    .option('--num-classes <n>', 'classes (default: a folder\'s class sub-folders, else the largest training label + 1)', num('num-classes'))
    .option('--cls-token', 'classify from the cls token after norm (default: global pool of the patch tokens, then fc_norm)')
    .option('--epochs <n>', 'epochs', num('epochs'), 10)
    .option('--warmup-epochs <n>', 'warm-up epochs (default min(5, epochs/10))', num('warmup-epochs'))
    .option('--batch <n>', 'batch size', num('batch'), 64)
    .option('--blr <x>', 'base learning rate (lr = blr·batch/256)', num('blr'), 1e-3)
    .option('--min-lr <x>', 'cosine floor', num('min-lr'), 1e-6)
    .option('--layer-decay <x>', 'layer-wise lr decay', num('layer-decay'), 0.75)
    .option('--weight-decay <x>', 'AdamW weight decay', num('weight-decay'), 0.05)
    .option('--drop-path <x>', 'stochastic depth of the last block', num('drop-path'), 0.1)
    .option('--smoothing <x>', 'label smoothing', num('smoothing'), 0.1)
    .option('--mixup <x>', 'mixup alpha (0 = off)', num('mixup'), 0.8)
    .option('--cutmix <x>', 'cutmix alpha (0 = off)', num('cutmix'), 1.0)
    .option('--clip-grad <x>', 'clip gradients to this global norm (0 = off)', num('clip-grad'), 0)
    .option('--no-augment', 'no random resized crop and flip (a folder: MAE\'s resize + centre crop)')
    .option('--aa <config>', 'RandAugment after crop and flip, timm\'s config string rand-m<M>-n<N>-mstd<S>-inc<0|1> (MAE: rand-m9-mstd0.5-inc1), or none', 'none')
    .option('--reprob <p>', 'random erasing probability per image (MAE: 0.25; 0 = off)', num('reprob'), 0)
    .addOption(new Option('--remode <mode>', 'random erasing fill: pixel (normal noise per value), rand (per channel), const (zeros)').choices(['pixel', 'rand', 'const']).default('pixel'))
    .option('--recount <n>', 'random erasing rectangles per erased image (n > 1: 1..n at random)', num('recount'), 1)
    .option('--workers <n>', WORKERS_HELP, count('workers'))
    .option('--prefetch <n>', 'folder: data: batches decoding while one is computed (0 = none)', count('prefetch'), 2)
    .addOption(new Option('--device <d>', 'device').choices(['auto', 'cpu', 'cuda']).default('auto'))
    .option('--threads <n>', 'CPU threads', num('threads'))
    .option('--seed <n>', 'seed of the head, data order, augmentation, mixing and drop path', num('seed'), 0)
    .option('--out <dir>', 'output folder (log.jsonl, checkpoints, classifier.safetensors)', 'runs/finetune')
    .option('--keep <n>', 'checkpoints to keep', num('keep'), 2)
    .option('--resume [file]', 'resume from a fine-tuning checkpoint (default: the newest in --out)')
    .option('--force', 'start over in a non-empty --out: deletes its checkpoints and log.jsonl')
    .option('--no-progress', 'no progress bar (a line every 50 steps instead)')
    .action(async (o) => {
      if (o.force && o.resume) throw new Error('--force starts a new run and --resume continues one: give one of them');
      if (o.weights && (o.preset || o.config)) throw new Error('--weights records its model: leave out --preset/--config');
      const randAugment = parseRandAugmentConfig(o.aa);
      if (!(o.reprob >= 0 && o.reprob <= 1)) throw new Error(`--reprob expects a probability in [0, 1], got ${o.reprob}`);
      if (!(Number.isInteger(o.recount) && o.recount >= 1)) throw new Error(`--recount expects a positive integer, got ${o.recount}`);
      const saved = o.weights ? await readSavedConfig(o.weights) : undefined;
      if (o.weights && !saved) throw new Error(`${o.weights} records no model config (it was not saved by emae); fine-tuning needs an emae pretraining file`);
      const encoder: Record<string, unknown> = saved ? { ...saved } : o.config ? JSON.parse(readFileSync(o.config, 'utf8')) : o.preset ? { preset: o.preset } : {};
      if (!o.weights && !o.preset && !o.config) throw new Error('give --weights (a pretrained encoder), or --preset/--config to fine-tune from scratch');
      const size = (encoder.imageSize as number | undefined) ?? (o.preset ? 224 : 32), channels = (encoder.channels as number | undefined) ?? (o.data.startsWith('idx:') ? 1 : 3);
      const decode = shared.decodeWorkers(o.workers);
      const folderOptions = { ...o, workers: decode.workers };
      const data = await labelledData(shared, o.data, '--data', folderOptions, size, channels);
      const test = o.testData ? await labelledData(shared, o.testData, '--test-data', { ...folderOptions, seed: (o.seed ?? 0) + 1 }, data.size, data.channels) : undefined;
      shared.warnThreadPool(data, decode.cpus);
      if (data.size !== size && encoder.imageSize !== undefined)
        throw new Error(`the data has ${data.size}×${data.size} images but the model is for ${size}×${size} (use --pad-to ${size} for IDX/CIFAR data)`);
      if (encoder.channels !== undefined && data.channels !== encoder.channels)
        throw new Error(`the data has ${data.channels} channel(s) but the model ${o.weights ? `saved in ${o.weights}` : 'configured'} has ${encoder.channels}`);
      let numClasses = o.numClasses;
      if (data instanceof ImageFolder) {
        assertClassFolders('data', data);
        if (numClasses !== undefined && numClasses !== data.classes.length)
          throw new Error(`--num-classes ${numClasses} disagrees with the ${data.classes.length} class sub-folder(s) of ${data.root} (leave it out to take theirs)`);
        numClasses = data.classes.length;
      }
      if (numClasses === undefined) numClasses = Math.max(...(data as LabelledImageSet).labels!.subarray(0, data.count)) + 1;
      const keys = ['preset', 'patchSize', 'embedDim', 'depth', 'numHeads', 'mlpRatio', 'layerNormEps'];
      const config: ClassifierConfig = {
        ...Object.fromEntries(keys.filter((k) => encoder[k] !== undefined).map((k) => [k, encoder[k]])),
        imageSize: data.size, channels: data.channels, numClasses, globalPool: !o.clsToken, dropPath: o.dropPath,
        labelSmoothing: o.smoothing, device: o.device, seed: o.seed, ...(o.threads !== undefined ? { threads: o.threads } : {}),
      };
      const model = await Classifier.create(config);
      try {
        if (o.weights && !o.resume) await model.loadPretrained(o.weights);
        const tuner = new FineTuner(model, data, {
          batchSize: o.batch, epochs: o.epochs, blr: o.blr, minLr: o.minLr, ...(o.warmupEpochs !== undefined ? { warmupEpochs: o.warmupEpochs } : {}),
          weightDecay: o.weightDecay, layerDecay: o.layerDecay, clipGrad: o.clipGrad, mixup: o.mixup, cutmix: o.cutmix,
          augment: o.augment, randAugment, randomErasing: { probability: o.reprob, mode: o.remode, count: o.recount },
          prefetch: o.prefetch, seed: o.seed, ...(test ? { testData: test } : {}), outDir: o.out, overwrite: o.force === true, keepLast: o.keep,
          onStep: (s) => {
            if (bar) bar.update(s.step, { loss: s.loss.toFixed(4), lr: s.lr.toExponential(2), ips: s.imagesPerSecond.toFixed(0) });
            else if (s.step % 50 === 0 || s.step === tuner.totalSteps)
              console.log(`step ${s.step}/${tuner.totalSteps} loss ${s.loss.toFixed(4)} lr ${s.lr.toExponential(2)} ${s.imagesPerSecond.toFixed(0)} img/s`);
          },
          onEpoch: (e) => {
            bar?.stop();
            console.log(`epoch ${e.epoch + 1}/${o.epochs}: train loss ${e.trainLoss.toFixed(4)}` +
              (e.testTop1 !== undefined ? `, test top-1 ${(100 * e.testTop1).toFixed(2)}%` : '') + ` (${e.seconds.toFixed(0)} s)`);
            if (bar && e.step < tuner.totalSteps) bar.start(tuner.totalSteps, e.step, { loss: '-', lr: '-', ips: '-' });
          },
        });
        const folder = data instanceof ImageFolder ? { classes: data.classes.length, workers: data.workers } : {};
        console.log(JSON.stringify({ classifier: model.config, data: { spec: o.data, count: data.count, test: test?.count, ...folder }, weights: o.weights ?? null }, null, 2));
        const bar = o.progress && process.stdout.isTTY
          ? new cliProgress.SingleBar({ format: 'step {value}/{total} |{bar}| loss {loss} lr {lr} {ips} img/s ETA {eta_formatted}' }, cliProgress.Presets.shades_classic)
          : undefined;
        // as pretrain: the first signal stops after the step with a checkpoint; a second while that
        // happens (a double Ctrl-C, npx forwarding the group's SIGTERM) waits; a third quits at once
        let signals = 0, finished = false, firstSignal = '';
        const onSignal = (name: string) => {
          signals += 1;
          firstSignal ||= name;
          bar?.stop();
          if (signals === 1) {
            tuner.stop();
            console.error(`${name}: stopping after step ${tuner.step + 1} and writing a checkpoint to ${o.out}`);
          } else if (signals === 2) {
            console.error(`${name}: ${finished ? 'finishing up' : `finishing step ${tuner.step + 1} and writing its checkpoint`}, please wait (a third signal quits without it)`);
          } else if (!finished) {
            console.error(`${name}: quitting without a new checkpoint at step ${tuner.step}; the checkpoints in ${o.out} are intact`);
            process.exit(name === 'SIGINT' ? 130 : 143);
          }
        };
        process.on('SIGINT', () => onSignal('SIGINT'));
        process.on('SIGTERM', () => onSignal('SIGTERM'));
        if (o.resume) {
          await tuner.resume(typeof o.resume === 'string' ? o.resume : undefined);
          console.log(`resumed at step ${tuner.step}`);
        }
        bar?.start(tuner.totalSteps, tuner.step, { loss: '-', lr: '-', ips: '-' });
        const last = await tuner.run();
        finished = true;
        bar?.stop();
        if (signals > 0) {
          console.log(`stopped at step ${tuner.step}; checkpoint in ${o.out} (continue with --resume)`);
          process.exitCode = firstSignal === 'SIGINT' ? 130 : 143;
          return;
        }
        const file = path.join(o.out, 'classifier.safetensors');
        await model.saveWeights(file);
        // the last epoch scored these weights already (a run resumed at its end did no epoch)
        const final = test ? last?.testTop1 ?? await top1Accuracy(model, test) : undefined;
        console.log(JSON.stringify({ steps: tuner.step, weights: file, ...(final !== undefined ? { testTop1: final } : {}) }));
      } finally {
        await model.dispose();
        for (const d of [data, test]) if (d instanceof ImageFolder) await d.dispose();
      }
    });

  program
    .command('evaluate')
    .description('top-1 accuracy of a fine-tuned classifier (classifier.safetensors or a fine-tuning checkpoint) on labelled data')
    .requiredOption('--weights <file>', 'classifier weights or fine-tuning checkpoint')
    .requiredOption('--data <spec>', 'labelled data: folder:<dir> (<dir>/<class>/<image>; MAE\'s resize + centre crop) | idx:<images>,<labels> | cifar10:<file>[,<file>…] | synthetic[:count]')
    .option('--pad-to <n>', 'zero-pad IDX/CIFAR images to this size', num('pad-to'))
    .addOption(new Option('--device <d>', 'device').choices(['auto', 'cpu', 'cuda']).default('auto'))
    .option('--threads <n>', 'CPU threads', num('threads'))
    .option('--batch <n>', 'batch of the forward passes', num('batch'), 256)
    .option('--limit <n>', LIMIT_HELP('images'), num('limit'))
    .option('--workers <n>', WORKERS_HELP, count('workers'))
    .action(async (o) => {
      let saved: Record<string, unknown>;
      try {
        const meta = await readSafetensorsMetadata(o.weights);
        if (meta[CLASSIFIER_CONFIG_KEY] === undefined)
          throw new Error('it records no classifier config (a pretraining file? fine-tune it first with emae finetune)');
        saved = JSON.parse(meta[CLASSIFIER_CONFIG_KEY]) as Record<string, unknown>;
      } catch (err) {
        throw new Error(`${o.weights}: not an emae classifier: ${(err as Error).message}`);
      }
      const decode = shared.decodeWorkers(o.workers);
      const data = await labelledData(shared, o.data, '--data', { ...o, workers: decode.workers }, saved.imageSize as number, saved.channels as number);
      shared.warnThreadPool(data, decode.cpus);
      const keys = ['imageSize', 'patchSize', 'channels', 'embedDim', 'depth', 'numHeads', 'mlpRatio', 'layerNormEps', 'numClasses', 'globalPool'];
      const model = await Classifier.create({
        ...Object.fromEntries(keys.map((k) => [k, saved[k]])) as unknown as ClassifierConfig,
        dropPath: 0, device: o.device, ...(o.threads !== undefined ? { threads: o.threads } : {}),
      });
      try {
        if (data.size !== model.config.imageSize || data.channels !== model.config.channels)
          throw new Error(`the data has ${data.channels} channel(s) of ${data.size}×${data.size} but the classifier takes ${model.config.channels} of ${model.config.imageSize}×${model.config.imageSize} (use --pad-to for IDX/CIFAR data)`);
        await model.loadWeights(o.weights);
        const progress = data instanceof ImageFolder ? shared.progress(`evaluate: decoding and scoring the images of ${data.root}`, data.count) : undefined;
        const top1 = await top1Accuracy(model, data, o.batch, progress);
        console.log(JSON.stringify({ weights: o.weights, data: o.data, count: data.count, top1 }));
      } finally {
        await model.dispose();
        if (data instanceof ImageFolder) await data.dispose();
      }
    });
}

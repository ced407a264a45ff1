#!/usr/bin/env node
// The emae command line (commander):
//   emae info                      version, backends built, CUDA devices, CPU threads
//   emae pretrain [options]        EMAE pretraining on synthetic, IDX or CIFAR-10 data
import { existsSync, readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import cliProgress from 'cli-progress';
import { loadCifar10, loadIdx, syntheticShapes, type LabelledImageSet } from './data.js';
import { ImageFolder } from './folder.js';
import type { BatchSource } from './trainer.js';
import { EMAE, cudaInfo, presetNames, version, type EMAEConfig } from './index.js';
import { native } from './native.js';
import { Trainer } from './trainer.js';

const program = new Command();
program.name('emae').description('EMAE (masked autoencoder) pretraining of Vision Transformers').version(version);

program
  .command('info')
  .description('show the version, the backends built, the CUDA devices found and the CPU threads')
  .option('--json', 'print JSON')
  .action((opts: { json?: boolean }) => {
    const cuda = cudaInfo();
    const info = {
      version,
      node: process.version,
      backends: cuda.compiled ? ['cpu', 'cuda'] : ['cpu'],
      cudaArchitectures: cuda.architectures,
      cudaDevices: cuda.devices,
      cudaError: cuda.error,
      cpuThreads: native().defaultThreads(),
    };
    if (opts.json) {
      console.log(JSON.stringify(info, null, 2));
      return;
    }
    console.log(`emae ${version} (node ${process.version})`);
    console.log(`backends built: ${info.backends.join(', ')}${cuda.compiled ? ` (CUDA architectures ${cuda.architectures})` : ''}`);
    console.log(`CPU threads (default): ${info.cpuThreads}`);
    if (cuda.devices.length === 0) console.log(`CUDA devices: none${cuda.error ? ` (${cuda.error})` : ''}`);
    for (const d of cuda.devices)
      console.log(`CUDA device ${d.index}: ${d.name}, compute capability ${d.computeCapability}, ${d.multiProcessors} SMs, ` +
        `${(d.totalMemory / 2 ** 30).toFixed(1)} GiB (${(d.freeMemory / 2 ** 30).toFixed(1)} GiB free)`);
  });

const num = (name: string) => (v: string) => {
  const x = Number(v);
  if (!Number.isFinite(x)) throw new Error(`--${name} expects a number, got '${v}'`);
  return x;
};

type Data = LabelledImageSet | (BatchSource & { size: number; channels: number });

async function loadData(spec: string, padTo: number | undefined, imageSize: number, channels: number, seed: number): Promise<Data> {
  const [kind, rest = ''] = spec.split(/:(.*)/s);
  if (kind === 'folder') {
    const folder = await ImageFolder.open(rest, { size: imageSize });
    return Object.assign(folder, { size: imageSize, channels: 3 });
  }
  if (kind === 'synthetic') return syntheticShapes(rest ? Number(rest) : 512, channels, imageSize, seed);
  if (kind === 'idx') {
    const [images, labels] = rest.split(',');
    return loadIdx(images, { labelsFile: labels, padTo });
  }
  if (kind === 'cifar10') return loadCifar10(rest.split(','), { padTo });
  throw new Error(`--data: expected synthetic[:count], folder:<dir>, idx:<images>[,<labels>] or cifar10:<file>[,<file>…], got '${spec}'`);
}

program
  .command('pretrain')
  .description('EMAE pretraining; prints the resolved configuration, logs every step to <out>/log.jsonl, checkpoints to <out>')
  .option('--data <spec>', 'synthetic[:count] | folder:<dir> | idx:<images>[,<labels>] | cifar10:<file>[,<file>…]', 'synthetic')
  .addOption(new Option('--preset <name>', 'model preset').choices([...presetNames]))
  .option('--config <file>', 'model config as JSON (keys of EMAE.create); flags override it')
  .option('--image-size <n>', 'image size (default: the data\'s)', num('image-size'))
  .option('--pad-to <n>', 'zero-pad IDX/CIFAR images to this size', num('pad-to'))
  .option('--parts <k>', 'parts K per iteration (1 = plain MAE)', num('parts'))
  .option('--mask-ratio <r>', 'mask ratio', num('mask-ratio'))
  .addOption(new Option('--device <d>', 'device').choices(['auto', 'cpu', 'cuda']).default('auto'))
  .option('--threads <n>', 'CPU threads', num('threads'))
  .option('--seed <n>', 'seed of the init, data order and masks', num('seed'), 0)
  .option('--steps <n>', 'optimizer steps (default 1000 unless --epochs)', num('steps'))
  .option('--epochs <n>', 'epochs instead of steps', num('epochs'))
  .option('--batch <n>', 'batch size per micro-batch', num('batch'), 64)
  .option('--accumulate <n>', 'micro-batches accumulated per optimizer step', num('accumulate'), 1)
  .option('--blr <x>', 'base learning rate (lr = blr·batch/256)', num('blr'), 1.5e-4)
  .option('--min-lr <x>', 'cosine floor', num('min-lr'), 0)
  .option('--warmup <n>', 'warm-up steps (default 5% of steps)', num('warmup'))
  .option('--weight-decay <x>', 'AdamW weight decay', num('weight-decay'), 0.05)
  .option('--clip-grad <x>', 'clip gradients to this global norm (0 = off)', num('clip-grad'), 0)
  .option('--consistency-weight <x>', 'λ of the consistency loss', num('consistency-weight'))
  .option('--consistency-start <n>', 'step from which the consistency loss is on', num('consistency-start'), 0)
  .option('--out <dir>', 'output folder (log.jsonl, checkpoints)', 'runs/emae')
  .option('--checkpoint-every <n>', 'checkpoint every N steps (and at the end)', num('checkpoint-every'), 500)
  .option('--keep <n>', 'checkpoints to keep', num('keep'), 3)
  .option('--resume [file]', 'resume from a checkpoint (default: the newest in --out)')
  .option('--no-progress', 'no progress bar (one line every 10 steps instead)')
  .action(async (o) => {
    const fromFile: EMAEConfig = o.config ? JSON.parse(readFileSync(o.config, 'utf8')) : {};
    const base: EMAEConfig = { ...(o.preset ? { preset: o.preset } : {}), ...fromFile };
    const channels = (fromFile.channels as number | undefined) ?? (o.data.startsWith('idx:') ? 1 : 3);
    const presetSize = o.preset ? 224 : undefined;
    const wantedSize = o.imageSize ?? (fromFile.imageSize as number | undefined) ?? (o.data.startsWith('synthetic') ? 32 : o.data.startsWith('folder:') ? presetSize ?? 32 : undefined);
    const data = await loadData(o.data, o.padTo, wantedSize ?? 32, channels, o.seed);
    const config: EMAEConfig = {
      ...(o.preset || o.config ? {} : { patchSize: 4, embedDim: 192, depth: 12, numHeads: 3, decoderEmbedDim: 128, decoderDepth: 4, decoderNumHeads: 4 }),
      ...base,
      imageSize: data.size,
      channels: data.channels,
      device: o.device,
      seed: o.seed,
      ...(o.parts !== undefined ? { parts: o.parts } : {}),
      ...(o.maskRatio !== undefined ? { maskRatio: o.maskRatio } : {}),
      ...(o.threads !== undefined ? { threads: o.threads } : {}),
    };
    if (wantedSize !== undefined && wantedSize !== data.size)
      throw new Error(`the data has ${data.size}×${data.size} images but the config asks for ${wantedSize} (use --pad-to or --image-size)`);
    const model = await EMAE.create(config);
    const trainerOptions = {
      batchSize: o.batch, accumulate: o.accumulate, ...(o.epochs !== undefined ? { epochs: o.epochs } : { steps: o.steps ?? 1000 }), blr: o.blr, minLr: o.minLr, warmupSteps: o.warmup, weightDecay: o.weightDecay,
      clipGrad: o.clipGrad, consistencyWeight: o.consistencyWeight, consistencyStart: o.consistencyStart, seed: o.seed,
      outDir: o.out, checkpointEvery: o.checkpointEvery, keepLast: o.keep,
    };
    console.log(JSON.stringify({ model: model.config, data: { spec: o.data, count: data.count, size: data.size, channels: data.channels }, trainer: trainerOptions }, null, 2));
    const bar = o.progress && process.stdout.isTTY
      ? new cliProgress.SingleBar({ format: 'step {value}/{total} |{bar}| loss {loss} recon {recon} cons {cons} lr {lr} {ips} img/s ETA {eta_formatted}' }, cliProgress.Presets.shades_classic)
      : undefined;
    const trainer = new Trainer(model, data, {
      ...trainerOptions,
      onStep: (s) => {
        const payload = { loss: s.loss.toFixed(4), recon: s.recon.toFixed(4), cons: s.consistency.toFixed(4), lr: s.lr.toExponential(2), ips: s.imagesPerSecond.toFixed(0) };
        if (bar) bar.update(s.step, payload);
        else if (s.step % 10 === 0 || s.step === trainer.totalSteps)
          console.log(`step ${s.step}/${trainer.totalSteps} loss ${payload.loss} recon ${payload.recon} consistency ${payload.cons} lr ${payload.lr} ${payload.ips} img/s`);
      },
    });
    if (o.resume) {
      await trainer.resume(typeof o.resume === 'string' ? o.resume : undefined);
      console.log(`resumed at step ${trainer.step}`);
    }
    let signal: string | undefined;
    const onSignal = (name: string) => () => {
      signal = name;
      trainer.stop();
    };
    const onInt = onSignal('SIGINT'), onTerm = onSignal('SIGTERM');
    process.once('SIGINT', onInt);
    process.once('SIGTERM', onTerm);
    bar?.start(trainer.totalSteps, trainer.step, { loss: '-', recon: '-', cons: '-', lr: '-', ips: '-' });
    try {
      await trainer.run();
    } finally {
      bar?.stop();
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      await model.dispose();
    }
    if (signal) {
      console.log(`${signal}: stopped at step ${trainer.step}; checkpoint written to ${o.out}`);
      process.exitCode = signal === 'SIGINT' ? 130 : 143;
    } else {
      console.log(`done: ${trainer.step} steps; checkpoints and log.jsonl in ${o.out}`);
    }
  });

program.parseAsync().catch((err: Error) => {
  console.error(`emae: ${err.message}`);
  process.exit(1);
});

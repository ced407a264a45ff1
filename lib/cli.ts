#!/usr/bin/env node
// The emae command line (commander):
//   emae info                      version, backends built, CUDA devices, CPU threads
//   emae pretrain [options]        EMAE pretraining on synthetic, IDX or CIFAR-10 data
//   emae finetune / evaluate       fine-tuning a pretrained encoder as a classifier (lib/cli-finetune.ts)
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { resolveConfig } from './config.js';
import { consistencyMeasure, knnAccuracy, linearProbe } from './evaluate.js';
import { lossCurvesSvg, readStepLog, resultsSvg, writeChart } from './charts.js';
import { architectureDifference, readSavedConfig } from './weights-file.js';
import { outDirError } from './run-folder.js';
import { Command, Option } from 'commander';
import cliProgress from 'cli-progress';
import { loadCifar10, loadIdx, syntheticShapes, type LabelledImageSet } from './data.js';
import { ImageFolder } from './folder.js';
import type { BatchSource } from './trainer.js';
import { EMAE, cpuInfo, cudaInfo, nativeBinding, presetNames, version, type EMAEConfig } from './index.js';
import { Trainer } from './trainer.js';
import { currentDistributed, initDistributed, isCollectiveError, type Collectives } from './distributed.js';
import { registerFinetuneCommands } from './cli-finetune.js';

const program = new Command();
program.name('emae').description('EMAE (masked autoencoder) pretraining and fine-tuning of Vision Transformers').version(version);

program
  .command('info')
  .description('show the version, the backends built, the CUDA devices found and the CPU threads')
  .option('--json', 'print JSON')
  .action((opts: { json?: boolean }) => {
    const cuda = cudaInfo(), cpu = cpuInfo(), addon = nativeBinding();
    const info = {
      version,
      node: process.version,
      nativeAddon: addon,
      backends: cuda.compiled ? ['cpu', 'cuda'] : ['cpu'],
      cudaArchitectures: cuda.architectures,
      cudaDevices: cuda.devices,
      cudaError: cuda.error,
      cpuThreads: cpu.defaultThreads,
      cpuGemmKernel: cpu.gemmKernel,
      cpuBf16: cpu.bf16Available ? `available (${cpu.bf16Kernel})` : `unavailable: ${cpu.bf16Reason}`,
    };
    if (opts.json) {
      console.log(JSON.stringify(info, null, 2));
      return;
    }
    console.log(`emae ${version} (node ${process.version})`);
    console.log(`native addon: ${addon.path} (${addon.prebuilt ? 'prebuilt' : 'built from source'}${addon.fromEnv ? ', from EMAE_NATIVE_PATH' : ''})`);
    console.log(`backends built: ${info.backends.join(', ')}${cuda.compiled ? ` (CUDA architectures ${cuda.architectures})` : ''}`);
    console.log(`CPU threads (default): ${info.cpuThreads}; GEMM micro-kernel: ${info.cpuGemmKernel}; cpuMatmul 'bf16': ${info.cpuBf16}`);
    if (cuda.devices.length === 0) console.log(`CUDA devices: none${cuda.error ? ` (${cuda.error})` : ''}`);
    for (const d of cuda.devices)
      console.log(`CUDA device ${d.index}: ${d.name}, compute capability ${d.computeCapability}, ${d.multiProcessors} SMs, ` +
        `${(d.totalMemory / 2 ** 30).toFixed(1)} GiB (${(d.freeMemory / 2 ** 30).toFixed(1)} GiB free); GEMM path: ${d.gemmPath}; attention: ${d.attentionPath}; step sync: ${d.stepSync}; activations: ${d.activations}`);
  });

const num = (name: string) => (v: string) => {
  const x = Number(v);
  if (!Number.isFinite(x)) throw new Error(`--${name} expects a number, got '${v}'`);
  return x;
};

// --workers/--prefetch: a count, 0 allowed
const count = (name: string) => (v: string) => {
  const x = Number(v);
  if (!/^\s*\d+\s*$/.test(v) || !Number.isSafeInteger(x)) throw new Error(`--${name} expects a non-negative integer, got '${v}'`);
  return x;
};

type Data = LabelledImageSet | (BatchSource & { size: number; channels: number });

// decode workers of folder: data without --workers: this machine's CPUs shared by its ranks; on 2
// CPUs the main thread alone decodes faster (workers cost CPU time there), above that workers
// keep the main thread free for the step (bench/RESULTS.md)
function decodeWorkers(requested: number | undefined, localSize = 1): { workers: number; cpus: number } {
  const cpus = Math.max(1, Math.floor(os.availableParallelism() / Math.max(1, localSize)));
  return { workers: requested ?? (cpus > 2 ? cpus : 0), cpus };
}

// the decoding itself runs on libuv's pool: say so when it is smaller than the workers and CPUs
function warnThreadPool(data: unknown, cpus: number): void {
  const pool = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  if (data instanceof ImageFolder && data.workers > pool && cpus > pool)
    console.error(`emae: the images decode on libuv's ${pool} threads: start emae with UV_THREADPOOL_SIZE=${cpus} to decode on ${cpus} CPUs`);
}

async function loadData(spec: string, padTo: number | undefined, imageSize: number, channels: number, seed: number,
  folderOptions: { workers?: number; limit?: number } = {}): Promise<Data> {
  const [kind, rest = ''] = spec.split(/:(.*)/s);
  if (kind === 'folder') {
    const onProgress = (checked: number, total: number) => {
      if (checked === 0 && total >= 10_000) console.error(`emae: reading the headers of ${total} images in ${rest}…`);
    };
    const folder = await ImageFolder.open(rest, { size: imageSize, onProgress, ...folderOptions });
    const bad = folder.unreadable.length;
    if (bad > 0) console.error(`emae: ${rest}: ${folder.count} images, ${bad} unreadable file${bad === 1 ? '' : 's'} left out`);
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
  .addOption(new Option('--cpu-matmul <p>', "CPU matmul precision: bf16 = operands in bf16 on AMX tiles or AVX512-BF16 (opt-in)").choices(['fp32', 'bf16']))
  .option('--seed <n>', 'seed of the init, data order and masks', num('seed'), 0)
  .option('--steps <n>', 'optimizer steps (default 1000 unless --epochs)', num('steps'))
  .option('--epochs <n>', 'epochs instead of steps', num('epochs'))
  .option('--batch <n>', 'batch size per micro-batch', num('batch'), 64)
  .option('--accumulate <n>', 'micro-batches accumulated per optimizer step', num('accumulate'), 1)
  .option('--workers <n>', 'folder: data: decode threads (0 or 1 = the main thread; default: this machine\'s CPUs over its ranks, 0 where that is 2 or less)', count('workers'))
  .option('--prefetch <n>', 'batches loading while one is computed (0 = none)', count('prefetch'), 2)
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
  .option('--force', 'start over in a non-empty --out: deletes its checkpoints, log.jsonl and curves')
  .option('--no-progress', 'no progress bar (one line every 10 steps instead)')
  .addOption(new Option('--collectives <c>', 'under mpirun/srun: gradient all-reduce of CUDA models over NCCL or host-staged MPI').choices(['auto', 'mpi', 'nccl']).default('auto'))
  .action(async (o) => {
    if (o.force && o.resume) throw new Error('--force starts a new run and --resume continues one: give one of them');
    // under mpirun/srun: join the job first (CUDA models go to this rank's device); rank 0 prints
    const dist = await initDistributed({ collectives: o.collectives as Collectives });
    const say = dist.isMain ? console.log : () => {};
    const decode = decodeWorkers(o.workers, dist.localSize);
    o.workers = decode.workers;
    const { model, data } = await modelAndData(o);
    if (dist.isMain) warnThreadPool(data, decode.cpus);
    const trainerOptions = {
      batchSize: o.batch, accumulate: o.accumulate, ...(o.epochs !== undefined ? { epochs: o.epochs } : { steps: o.steps ?? 1000 }), blr: o.blr, minLr: o.minLr, warmupSteps: o.warmup, weightDecay: o.weightDecay,
      clipGrad: o.clipGrad, consistencyWeight: o.consistencyWeight, consistencyStart: o.consistencyStart, seed: o.seed,
      outDir: o.out, checkpointEvery: o.checkpointEvery, keepLast: o.keep, overwrite: o.force === true, prefetch: o.prefetch,
    };
    const parallel = dist.worldSize > 1 || dist.collectives === 'nccl';  // the Trainer's data-parallel step
    const distributed = parallel ? { worldSize: dist.worldSize, collectives: dist.collectives, ...(dist.ncclUnavailable ? { ncclUnavailable: dist.ncclUnavailable } : {}),
      mpi: dist.mpiLibrary, effectiveBatch: o.batch * o.accumulate * dist.worldSize } : undefined;
    const workers = data instanceof ImageFolder ? { workers: data.workers } : {};
    say(JSON.stringify({ model: model.config, data: { spec: o.data, count: data.count, size: data.size, channels: data.channels, ...workers }, trainer: trainerOptions, ...(distributed ? { distributed } : {}) }, null, 2));
    const bar = dist.isMain && o.progress && process.stdout.isTTY
      ? new cliProgress.SingleBar({ format: 'step {value}/{total} |{bar}| loss {loss} recon {recon} cons {cons} lr {lr} {ips} img/s ETA {eta_formatted}' }, cliProgress.Presets.shades_classic)
      : undefined;
    const trainer = new Trainer(model, data, {
      ...trainerOptions,
      ...(parallel ? { distributed: dist } : {}),
      onStep: (s) => {
        if (!dist.isMain) return;
        const payload = { loss: s.loss.toFixed(4), recon: s.recon.toFixed(4), cons: s.consistency.toFixed(4), lr: s.lr.toExponential(2), ips: s.imagesPerSecond.toFixed(0) };
        if (bar) bar.update(s.step, payload);
        else if (s.step % 10 === 0 || s.step === trainer.totalSteps)
          console.log(`step ${s.step}/${trainer.totalSteps} loss ${payload.loss} recon ${payload.recon} consistency ${payload.cons} lr ${payload.lr} ${payload.ips} img/s`);
      },
    });
    let signal: string | undefined;
    // A signal asks for a checkpoint and a clean stop. More signals while that happens (a double
    // Ctrl-C, npx forwarding the group's SIGTERM) must not cut the checkpoint short; only a third
    // quits at once — the previous checkpoint is intact, since checkpoints are renamed into place.
    let signals = 0, finished = false;
    const onSignal = (name: string) => {
      signals += 1;
      signal ??= name;
      const tell = (line: string) => { bar?.stop(); if (dist.isMain) console.error(line); };
      if (signals === 1) {
        trainer.stop();
        tell(`${name}: stopping after step ${trainer.step + 1} and writing a checkpoint${o.out ? ` to ${o.out}` : ''}`);
      } else if (signals === 2) {
        tell(finished ? `${name}: the checkpoint is written; finishing up, please wait`
          : `${name}: ${trainer.writingCheckpoint ? 'writing checkpoint' : `finishing step ${trainer.step + 1} and writing its checkpoint`}, ` +
            'please wait (a third signal quits without it)');
      } else if (!finished) {
        tell(`${name}: quitting without a new checkpoint at step ${trainer.step}; the checkpoints in ${o.out} are intact`);
        process.exit(name === 'SIGINT' ? 130 : 143);
      }
    };
    const onInt = () => onSignal('SIGINT'), onTerm = () => onSignal('SIGTERM');
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
    try {
      if (o.resume) {
        await trainer.resume(typeof o.resume === 'string' ? o.resume : undefined);
        say(`resumed at step ${trainer.step}`);
      }
      const prepared = await trainer.prepareOutDir();
      if (prepared.removed.length > 0) say(`${o.resume ? 'removed interrupted writes' : '--force: deleted'} in ${o.out}: ${prepared.removed.join(', ')}`);
      if (prepared.logLinesDropped > 0)
        say(`log.jsonl cut back to step ${trainer.step} (${prepared.logLinesDropped} later line${prepared.logLinesDropped === 1 ? '' : 's'} dropped)`);
      bar?.start(trainer.totalSteps, trainer.step, { loss: '-', recon: '-', cons: '-', lr: '-', ips: '-' });
      await trainer.run();
      finished = true;
    } finally {
      bar?.stop();
      // the handlers stay: a late signal must not kill the process while it draws the curves
      await model.dispose();
      if (data instanceof ImageFolder) await data.dispose();
    }
    // the loss curves as a picture next to the log
    const log = path.join(o.out, 'log.jsonl');
    await dist.finalize();
    if (dist.isMain && existsSync(log)) await writeChart(await lossCurvesSvg({ [path.basename(path.resolve(o.out))]: await readStepLog(log) }), path.join(o.out, 'curves'));
    if (signal) {
      say(`${signal}: stopped at step ${trainer.step}; checkpoint written to ${o.out}`);
      process.exitCode = signal === 'SIGINT' ? 130 : 143;
    } else {
      say(`${trainer.step < trainer.totalSteps ? 'stopped (another rank was signalled)' : 'done'}: ${trainer.step} steps; checkpoints and log.jsonl in ${o.out}`);
    }
  });


// Model and data from the shared flags (--preset/--config/--image-size/--pad-to/--data/--weights/…).
// An emae weights file or checkpoint records its model config: without --config/--preset the model
// is built from it (the data must fit it), with them they must agree with it on the architecture.
// Otherwise the image size and channels come from the data unless the config fixes them.
async function modelAndData(o: any, dataSpec: string = o.data): Promise<{ model: EMAE; data: Data }> {
  // the header alone: loadWeights reads and verifies the whole file once the model exists
  if (o.weights) o.savedConfig = { file: o.weights, config: await readSavedConfig(o.weights) };
  // kept on `o`: probe builds its test data with `{ ...o, weights: undefined }` and must fit the same model
  const saved: EMAEConfig | undefined = o.savedConfig?.config;
  const savedFile: string | undefined = o.savedConfig?.file;
  const explicit = Boolean(o.preset || o.config);
  const fromFile: EMAEConfig = o.config ? JSON.parse(readFileSync(o.config, 'utf8')) : {};
  let base: EMAEConfig = explicit ? { ...(o.preset ? { preset: o.preset } : {}), ...fromFile } : saved ? { ...saved } :
    { patchSize: 4, embedDim: 192, depth: 12, numHeads: 3, decoderEmbedDim: 128, decoderDepth: 4, decoderNumHeads: 4 };
  // a new mask ratio has its own number of parts unless --parts says otherwise
  if (!explicit && saved && o.maskRatio !== undefined && o.parts === undefined) base = { ...base, parts: undefined };
  const savedResolved = saved ? resolveConfig(saved) : undefined;
  if (savedResolved && o.imageSize !== undefined && o.imageSize !== savedResolved.imageSize)
    throw new Error(`--image-size ${o.imageSize} disagrees with ${savedFile}, saved for image size ${savedResolved.imageSize}`);
  // a --config without image size or channels takes them from the weights, as the data does
  const channels = (base.channels as number | undefined) ?? savedResolved?.channels ?? (dataSpec.startsWith('idx:') ? 1 : 3);
  const presetSize = o.preset ? 224 : undefined;
  const wantedSize = o.imageSize ?? (base.imageSize as number | undefined) ?? savedResolved?.imageSize ??
    (dataSpec.startsWith('synthetic') ? 32 : dataSpec.startsWith('folder:') ? presetSize ?? 32 : undefined);
  // a folder's --limit (probe) spreads over its classes: the first n files would be the first classes only
  const folderOptions = { ...(o.workers !== undefined ? { workers: o.workers } : {}), ...(o.limit !== undefined ? { limit: o.limit } : {}) };
  const data = await loadData(dataSpec, o.padTo, wantedSize ?? 32, channels, o.seed ?? 0, folderOptions);
  if (savedResolved) {
    const plural = (n: number) => `${n} channel${n === 1 ? '' : 's'}`;
    if (data.channels !== savedResolved.channels)
      throw new Error(`the data's images have ${plural(data.channels)} but ${savedFile} was saved for ${plural(savedResolved.channels)}`);
    if (data.size !== savedResolved.imageSize)
      throw new Error(`the data has ${data.size}×${data.size} images but ${savedFile} was saved for image size ${savedResolved.imageSize}` +
        ` (use --pad-to ${savedResolved.imageSize} for IDX/CIFAR data)`);
  }
  if (wantedSize !== undefined && wantedSize !== data.size)
    throw new Error(`the data has ${data.size}×${data.size} images but the config asks for ${wantedSize} (use --pad-to or --image-size)`);
  const config: EMAEConfig = {
    ...base,
    imageSize: data.size,
    channels: data.channels,
    device: o.device ?? 'auto',
    seed: o.seed ?? 0,
    ...(o.parts !== undefined ? { parts: o.parts } : {}),
    ...(o.maskRatio !== undefined ? { maskRatio: o.maskRatio } : {}),
    ...(o.threads !== undefined ? { threads: o.threads } : {}),
    ...(o.cpuMatmul !== undefined ? { cpuMatmul: o.cpuMatmul } : {}),
  };
  if (explicit && savedResolved) {
    const given = o.config ? `--config ${o.config}` : `--preset ${o.preset}`;
    const diff = architectureDifference(savedResolved, 'the file', resolveConfig(config), o.config ? '--config' : '--preset');
    if (diff) throw new Error(`${savedFile} was saved for another model than ${given} describes: ${diff} (leave out ${given.split(' ')[0]} to use the file's)`);
  }
  const model = await EMAE.create(config);
  if (o.weights) {
    try {
      await loadAnyWeights(model, o.weights, saved === undefined && !explicit);
    } catch (err) {
      await model.dispose();
      throw err;
    }
  }
  return { model, data };
}

// An emae checkpoint (its parameters: the optimizer state is for resuming), emae weights, or
// weights from elsewhere; those record no config, so a mismatch most likely means a missing one.
async function loadAnyWeights(model: EMAE, file: string, guessedConfig: boolean): Promise<void> {
  try {
    await model.loadWeights(file);
  } catch (err) {
    if (guessedConfig && err instanceof Error)
      err.message += `. ${file} records no model config (it was not saved by emae): give the model's --config or --preset`;
    throw err;
  }
}

const sharedModelOptions = (cmd: Command) => cmd
  .option('--data <spec>', 'synthetic[:count] | folder:<dir> | idx:<images>[,<labels>] | cifar10:<file>[,<file>…]', 'synthetic')
  .addOption(new Option('--preset <name>', 'model preset').choices([...presetNames]))
  .option('--config <file>', 'model config as JSON (keys of EMAE.create; default: the one saved in --weights)')
  .option('--image-size <n>', 'image size (default: the weights\' or the data\'s)', num('image-size'))
  .option('--pad-to <n>', 'zero-pad IDX/CIFAR images to this size', num('pad-to'))
  .option('--weights <file>', 'emae weights or checkpoint (.safetensors; they record their config), or PyTorch weights with --config/--preset')
  .option('--parts <k>', 'parts K per image (default: the saved or config\'s)', num('parts'))
  .option('--mask-ratio <r>', 'mask ratio (default: the saved or config\'s)', num('mask-ratio'))
  .addOption(new Option('--device <d>', 'device').choices(['auto', 'cpu', 'cuda']).default('auto'))
  .option('--threads <n>', 'CPU threads', num('threads'))
  .addOption(new Option('--cpu-matmul <p>', "CPU matmul precision: bf16 = operands in bf16 on AMX tiles or AVX512-BF16 (opt-in)").choices(['fp32', 'bf16']))
  .option('--seed <n>', 'seed of the masks', num('seed'), 0);

sharedModelOptions(program.command('reconstruct')
  .description('write a PNG grid per image: original | each part\'s masked input | each part\'s reconstruction | assembled'))
  .option('--count <n>', 'images', num('count'), 4)
  .option('--scale <n>', 'enlarge each pixel to n×n (default: images at least 128 px high)', num('scale'))
  .option('--out <dir>', 'output folder', 'runs/reconstructions')
  .action(async (o) => {
    if (o.scale !== undefined && !(Number.isInteger(o.scale) && o.scale >= 1 && o.scale <= 64))
      throw new Error(`--scale expects an integer from 1 to 64, got ${o.scale}`);
    const { model, data } = await modelAndData(o);
    try {
      const { images } = await firstImagesFrom(data, 0, Math.min(o.count, data.count));
      const r = await model.reconstruct(images, { seed: o.seed });
      makeOutDir(o.out);
      const c = model.config, S = c.imageSize, C = c.channels, K = c.parts, per = C * S * S, gap = 2;
      const B = images.length / per, tiles = 2 + 2 * K, width = tiles * S + (tiles - 1) * gap;
      const scale: number = o.scale ?? Math.min(16, Math.max(1, Math.ceil(128 / S)));
      for (let b = 0; b < B; b++) {
        const orig = images.subarray(b * per, (b + 1) * per);
        let lo = Infinity, hi = -Infinity;
        for (const v of orig) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)];
        const rgb = Buffer.alloc(width * S * 3, 255);
        const put = (tile: number, img: ArrayLike<number>, masked?: (x: number, y: number) => boolean) => {
          for (let y = 0; y < S; y++)
            for (let x = 0; x < S; x++)
              for (let ch = 0; ch < 3; ch++) {
                const v = img[(Math.min(ch, C - 1) * S + y) * S + x];
                const g = masked?.(x, y) ? 128 : Math.round(255 * Math.min(1, Math.max(0, (v - lo) / (hi - lo || 1))));
                rgb[(y * width + tile * (S + gap) + x) * 3 + ch] = g;
              }
        };
        const patchOf = (x: number, y: number) => Math.floor(y / c.patchSize) * (S / c.patchSize) + Math.floor(x / c.patchSize);
        put(0, orig);
        for (let k = 0; k < K; k++) {
          put(1 + k, orig, (x, y) => !r.visible[(b * K + k) * c.numPatches + patchOf(x, y)]);
          put(1 + K + k, r.parts.subarray((b * K + k) * per, (b * K + k + 1) * per));
        }
        put(1 + 2 * K, r.assembled.subarray(b * per, (b + 1) * per));
        await sharp(rgb, { raw: { width, height: S, channels: 3 } }).resize(width * scale, S * scale, { kernel: 'nearest' })
          .png().toFile(path.join(o.out, `reconstruction-${b}.png`));
      }
      console.log(`wrote ${B} grids (${width * scale}×${S * scale}, ${scale}× enlarged) to ${o.out}: ` +
        `original | ${K} masked inputs | ${K} reconstructions | assembled`);
    } finally {
      await model.dispose();
    }
  });

sharedModelOptions(program.command('probe')
  .description('top-1 accuracy of a linear probe and of weighted kNN on frozen encoder features'))
  .requiredOption('--test-data <spec>', 'labelled validation data (same forms as --data)')
  .addOption(new Option('--pool <p>', 'feature pooling').choices(['cls', 'mean']).default('cls'))
  .option('--limit <n>', 'use at most this many train and test images (from a folder: spread over its classes)', num('limit'))
  .option('--epochs <n>', 'linear-probe epochs', num('epochs'), 30)
  .option('--out <dir>', 'also write probe.json and a probe.svg/png chart here')
  .action(async (o) => {
    const { model, data } = await modelAndData(o);
    try {
      const test = (await modelAndData({ ...o, weights: undefined, seed: (o.seed ?? 0) + 1 }, o.testData).then(async (r) => { await r.model.dispose(); return r.data; }));
      const features = async (d: Data, which: string) => {
        const n = Math.min(o.limit ?? d.count, d.count);
        const out: Float32Array[] = [];
        const labels: number[] = [];
        const progress = progressOnStderr(`probe: encoding the ${which} images`, n);
        for (let s = 0; s < n; s += 256) {
          const { images, labels: l } = await firstImagesFrom(d, s, Math.min(256, n - s));
          out.push(await model.encode(images, { pool: o.pool }));
          labels.push(...l);
          progress(s + l.length);
        }
        if (labels.some((l) => l < 0)) throw new Error('probe: the data has no labels');
        const x = new Float32Array(out.reduce((a, f) => a + f.length, 0));
        let at = 0;
        for (const f of out) { x.set(f, at); at += f.length; }
        return { x, labels, dim: model.config.embedDim };
      };
      const [train, val] = [await features(data, 'train'), await features(test, 'test')];
      const probe = linearProbe(train, val, { epochs: o.epochs, onEpoch: progressOnStderr('probe: training the linear classifier (epochs)', o.epochs) });
      console.error('probe: weighted kNN (k 20) over the train features');
      const knn = knnAccuracy(train, val);
      const classes = (labels: number[]) => new Set(labels).size;
      const result = { train: train.labels.length, test: val.labels.length, trainClasses: classes(train.labels), testClasses: classes(val.labels),
        pool: o.pool, linearProbeTop1: probe, knnTop1: knn };
      console.log(JSON.stringify(result));
      if (o.out) {
        makeOutDir(o.out);
        await writeFile(path.join(o.out, 'probe.json'), JSON.stringify(result, null, 2));
        const run = o.weights ? path.basename(o.weights, '.safetensors') : 'model';
        await writeChart(await resultsSvg([{ run, metric: 'linear probe', value: probe }, { run, metric: 'kNN', value: knn }]), path.join(o.out, 'probe'));
      }
    } finally {
      await model.dispose();
    }
  });

sharedModelOptions(program.command('consistency')
  .description('the consistency measure: mean distance between predictions of the same patch over mask draws'))
  .option('--count <n>', 'images', num('count'), 64)
  .option('--draws <n>', 'mask draws per image', num('draws'), 4)
  .action(async (o) => {
    const { model, data } = await modelAndData(o);
    try {
      const { images } = await firstImagesFrom(data, 0, Math.min(o.count, data.count));
      const count = images.length / (data.channels * data.size * data.size);
      const consistency = await consistencyMeasure(model, images, { draws: o.draws, seed: o.seed });
      console.log(`consistency ${consistency.toPrecision(4)}: over ${count} images and ${o.draws} mask draws each, the mean squared ` +
        'difference per pixel value (in the units of the normalized input) between two reconstructions of the same masked patch ' +
        'made from different visible patches. 0 means a prediction does not depend on which patches were visible; lower is more ' +
        'self-consistent (the paper\'s measure; compare checkpoints on the same data with the same --count and --draws).');
      console.log(JSON.stringify({ images: count, draws: o.draws, consistency }));
    } finally {
      await model.dispose();
    }
  });

// Creates an output folder, or says in a sentence why it cannot (a file in the way, no permission).
function makeOutDir(dir: string): void {
  try {
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    throw outDirError(dir, err as NodeJS.ErrnoException);
  }
}

// Progress of a long phase on stderr (stdout stays for results): a bar on a terminal, else a line
// at every tenth. Returns the update function (done so far).
function progressOnStderr(what: string, total: number): (done: number) => void {
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar({ format: `${what} |{bar}| {value}/{total}`, stream: process.stderr, clearOnComplete: true },
      cliProgress.Presets.shades_classic);
    bar.start(total, 0);
    return (done) => { bar.update(done); if (done >= total) bar.stop(); };
  }
  let shown = -1;
  return (done) => {
    const tenth = Math.floor((10 * done) / Math.max(1, total));
    if (tenth > shown) { shown = tenth; console.error(`${what}: ${done}/${total}`); }
  };
}

// images [start, start + count) and their labels (−1 where none), from memory or a source
// Images start..start+count of the data, as evaluation sees them: a folder's with MAE's eval
// transform (resize, centre crop), not pretraining's random crop.
async function firstImagesFrom(data: Data, start: number, count: number): Promise<{ images: Float32Array; labels: number[] }> {
  const per = data.channels * data.size * data.size;
  const indices = Int32Array.from({ length: count }, (_, i) => start + i);
  if (data instanceof ImageFolder) {
    const batch = await data.loadBatch(indices, 0, { crop: 'center' });
    return { images: batch.images, labels: Array.from(batch.labels) };
  }
  const labels = Array.from(indices, (i) => Number((data as { labels?: ArrayLike<number> }).labels?.[i] ?? -1));
  if ('images' in data) return { images: data.images.slice(start * per, (start + count) * per), labels };
  return { images: await data.load(indices, 0), labels };
}

registerFinetuneCommands(program, { num, count, loadData, decodeWorkers, warnThreadPool, progress: progressOnStderr });

program.parseAsync().catch(async (err: Error) => {
  const dist = currentDistributed();
  if (dist && dist.worldSize > 1) {
    // a failure of this rank alone ends the whole job (MPI_Abort), naming the rank; one that
    // every rank met together ends it cleanly: a rank that failed (the Trainer told the others)
    // prints its own error, which names it, and rank 0 prints the rest ("rank 1 failed at step
    // 3 …", a non-finite all-reduced loss)
    if (!isCollectiveError(err)) dist.abort(err.message);
    const own = (err as { failedRanks?: number[] }).failedRanks?.includes(dist.rank) ?? false;
    if (own || dist.isMain) console.error(`emae: ${err.message}`);
    await dist.finalize().catch(() => undefined);
    process.exit(1);
  }
  console.error(`emae: ${err.message}`);
  process.exit(1);
});

// Does the data pipeline keep up? Images/s of the image-folder loader (JPEG decode +
// RandomResizedCrop + flip + normalize) for each number of decode workers, in the same run, next
// to the CPU training step's images/s; then the trainer fed by the folder with a stand-in for an
// accelerator step (a fixed wait that uses no CPU) for each prefetch depth.
//   node --import=tsx bench/loader.ts [--images 256] [--batches 8] [--batch 32] [--workers 1,2]
//     [--rounds 3] [--sizes 224,32] [--step-ms 150] [--steps 12] [--prefetch 0,1,2] [--large-every N]
//     [--no-loader] [--no-cpu-step]
// --large-every N makes every Nth image 1200×900 instead of 400×300, so that batches take unequal
// times to load, as with real photos (ImageNet's range from thumbnails to several megapixels).
// --workers lists the ImageFolder `workers` values (0 or 1: the main thread; N ≥ 2: N worker
// threads); the rounds alternate them and each row gives the median and every round. "CPU ms/img"
// is this process's CPU time (all its threads) per image, "main thread ms/img" the main thread's
// share of it (what caps the loader where CPUs are plenty: the trainer runs on that thread too);
// "others" is the share of the CPUs other processes took meanwhile (/proc/stat): much above 10%
// and the row was measured on a busy machine.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { EMAE, ImageFolder, ParallelMasker, Trainer } from '../lib/index.js';

const { values: a } = parseArgs({
  options: {
    images: { type: 'string', default: '256' }, batches: { type: 'string', default: '8' }, batch: { type: 'string', default: '32' },
    workers: { type: 'string', default: '1,2' }, rounds: { type: 'string', default: '3' }, sizes: { type: 'string', default: '224,32' },
    'step-ms': { type: 'string', default: '150' }, steps: { type: 'string', default: '12' }, prefetch: { type: 'string', default: '0,1,2' },
    'large-every': { type: 'string', default: '0' }, 'no-loader': { type: 'boolean', default: false },
    'no-cpu-step': { type: 'boolean', default: false },
  },
});
const list = (s: string) => s.split(',').filter((x) => x !== '').map(Number);
const count = Number(a.images), batches = Number(a.batches), B = Number(a.batch), rounds = Number(a.rounds);
const workerCounts = list(a.workers), sizes = list(a.sizes), prefetches = list(a.prefetch);
const stepMs = Number(a['step-ms']), trainSteps = Number(a.steps), largeEvery = Number(a['large-every']);

/** Busy and total jiffies of all CPUs (/proc/stat), or null where there is none. */
function jiffies(): { busy: number; total: number } | null {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((x, y) => x + y, 0);
    return { busy: total - f[3] - (f[4] ?? 0), total };
  } catch {
    return null;
  }
}

/** The main thread's CPU seconds (user + system, /proc/self/task/<pid>/stat), or NaN where there is none. */
function mainThreadCpu(): number {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;  // utime, stime in clock ticks (USER_HZ 100)
  } catch {
    return Number.NaN;
  }
}

/**
 * Runs `fn` and returns its wall seconds, this process's CPU seconds (all threads), the main
 * thread's CPU seconds, and other processes' share of the CPUs (%).
 */
async function measured(fn: () => Promise<void>): Promise<{ wall: number; cpu: number; main: number; othersPct: number }> {
  const j0 = jiffies(), c0 = process.cpuUsage(), m0 = mainThreadCpu(), t0 = performance.now();
  await fn();
  const wall = (performance.now() - t0) / 1000, c = process.cpuUsage(c0), j1 = jiffies();
  const main = mainThreadCpu() - m0;
  const cpu = (c.user + c.system) / 1e6, cpus = os.availableParallelism();
  let othersPct = NaN;
  if (j0 && j1 && j1.total > j0.total) othersPct = Math.max(0, 100 * ((j1.busy - j0.busy) / (j1.total - j0.total) - cpu / (wall * cpus)));
  return { wall, cpu, main, othersPct };
}
const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];

const dir = mkdtempSync(path.join(os.tmpdir(), 'emae-loader-'));
mkdirSync(path.join(dir, 'all'));
for (let i = 0; i < count; i++) {  // ImageNet-like JPEGs: 400×300 with texture
  const large = largeEvery > 0 && i % largeEvery === largeEvery - 1;
  const w = large ? 1200 : 400, h = large ? 900 : 300, px = Buffer.alloc(w * h * 3);
  for (let p = 0; p < w * h; p++) px.set([(p * 7 + i) % 256, ((p >> 3) + i * 5) % 256, (p * 13) % 256], p * 3);
  await sharp(px, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 85 }).toFile(path.join(dir, 'all', `${i}.jpg`));
}

const rows: string[] = [];
const kind = largeEvery > 0 ? `400×300 JPEG (every ${largeEvery}th 1200×900)` : '400×300 JPEG';
for (const size of a['no-loader'] ? [] : sizes) {
  const folders = new Map<number, ImageFolder>();
  for (const w of workerCounts) {
    const folder = await ImageFolder.open(dir, { size, workers: w });
    await folder.load(Int32Array.from({ length: B }, (_, i) => i), 999);  // warm-up: workers started, files cached
    folders.set(w, folder);
  }
  const runs = new Map<number, Array<{ ips: number; cpuMs: number; mainMs: number; othersPct: number }>>();
  for (let r = 0; r < rounds; r++)
    for (const w of workerCounts) {
      const m = await measured(async () => {
        for (let b = 0; b < batches; b++)
          await folders.get(w)!.load(Int32Array.from({ length: B }, (_, i) => (b * B + i) % count), r * batches + b);
      });
      const n = batches * B;
      (runs.get(w) ?? runs.set(w, []).get(w)!).push({ ips: n / m.wall, cpuMs: (1000 * m.cpu) / n, mainMs: (1000 * m.main) / n, othersPct: m.othersPct });
    }
  for (const w of workerCounts) {
    const rs = runs.get(w)!;
    rows.push(`| folder loader, ${kind} → ${size}×${size}, workers ${w} | ${median(rs.map((x) => x.ips)).toFixed(0)} | ` +
      `${rs.map((x) => x.ips.toFixed(0)).join(', ')} | ${median(rs.map((x) => x.cpuMs)).toFixed(2)} | ${median(rs.map((x) => x.mainMs)).toFixed(2)} | ` +
      `${median(rs.map((x) => x.othersPct)).toFixed(0)}% |`);
    await folders.get(w)!.dispose();
  }
}

// The trainer on the folder (224², the largest size) with a step that waits stepMs and uses no CPU,
// as an accelerator's would: images/s for each number of workers and prefetch depth, the rounds
// alternating them (each run starts with an empty prefetch queue: its first batch is not overlapped)
if (prefetches.length > 0 && trainSteps > 0) {
  const size = Math.max(...sizes);
  const model = await EMAE.create({ imageSize: size, patchSize: 16, embedDim: 32, depth: 1, numHeads: 2, decoderEmbedDim: 32,
    decoderDepth: 1, decoderNumHeads: 2, device: 'cpu', threads: 1 });
  Object.assign(model, {
    trainStep: async () => {
      await new Promise((resolve) => setTimeout(resolve, stepMs));
      return { loss: 1, recon: 1, consistency: 0, gradNorm: 1 };
    },
  });
  const folders = new Map<number, ImageFolder>();
  for (const w of workerCounts) {
    folders.set(w, await ImageFolder.open(dir, { size, workers: w }));
    await folders.get(w)!.load(Int32Array.from({ length: B }, (_, i) => i), 999);  // warm-up
  }
  const runs = new Map<string, Array<{ ips: number; cpuMs: number; mainMs: number; othersPct: number }>>();
  for (let r = 0; r < rounds; r++)
    for (const w of workerCounts)
      for (const prefetch of prefetches) {
        const trainer = new Trainer(model, folders.get(w)!, { batchSize: B, steps: trainSteps, prefetch, seed: r });
        const m = await measured(async () => { await trainer.run(); });
        const n = trainSteps * B, key = `${w}/${prefetch}`;
        (runs.get(key) ?? runs.set(key, []).get(key)!).push({ ips: n / m.wall, cpuMs: (1000 * m.cpu) / n, mainMs: (1000 * m.main) / n, othersPct: m.othersPct });
      }
  for (const w of workerCounts)
    for (const prefetch of prefetches) {
      const rs = runs.get(`${w}/${prefetch}`)!;
      rows.push(`| trainer on the folder (${kind} → ${size}²), stand-in step of ${stepMs} ms, workers ${w}, prefetch ${prefetch} | ${median(rs.map((x) => x.ips)).toFixed(0)} | ` +
        `${rs.map((x) => x.ips.toFixed(0)).join(', ')} | ${median(rs.map((x) => x.cpuMs)).toFixed(2)} | ${median(rs.map((x) => x.mainMs)).toFixed(2)} | ` +
        `${median(rs.map((x) => x.othersPct)).toFixed(0)}% |`);
    }
  rows.push(`| (the stand-in step alone: ${B} images per ${stepMs} ms) | ${((1000 * B) / stepMs).toFixed(0)} | | | | |`);
  await model.dispose();
  for (const f of folders.values()) await f.dispose();
}

if (!a['no-cpu-step']) {
  const model = await EMAE.create({ preset: 'cpu-tiny', device: 'cpu' });
  const c = model.config, masker = ParallelMasker.fromConfig(c, 1);
  const images = Float32Array.from({ length: B * c.channels * c.imageSize * c.imageSize }, () => Math.random() - 0.5);
  await model.trainStep({ images, permutation: masker.next(B), batchSize: B }, { lr: 1e-4 });  // warm-up
  const steps = 3;
  const m = await measured(async () => {
    for (let s = 0; s < steps; s++) await model.trainStep({ images, permutation: masker.next(B), batchSize: B }, { lr: 1e-4 });
  });
  rows.push(`| CPU training step, cpu-tiny (32², K = 4, batch ${B}) | ${((steps * B) / m.wall).toFixed(0)} | | | | ${m.othersPct.toFixed(0)}% |`);
  await model.dispose();
}
rmSync(dir, { recursive: true, force: true });
console.log(`${os.cpus()[0]?.model}, ${os.availableParallelism()} logical CPUs, UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? 4}, ` +
  `${count} images, ${batches} batches of ${B} per round, ${rounds} rounds`);
console.log('| stage | images/s (median) | each round | CPU ms/img | main thread ms/img | others |\n|---|---|---|---|---|---|\n' + rows.join('\n'));

// Data parallelism (lib/distributed.ts, native/distributed/): N ranks with batch B/N compute the
// step of one rank with batch B — losses, parameters and AdamW moments — and the ranks stay
// bitwise identical; resume after a stop on one rank; a failing or killed rank ends the job
// quickly and names itself; bad options are clear errors. The multi-process tests start
// `mpirun -np 2` on the CPU (1 thread per rank) and are skipped, saying why, where mpirun or the
// addon's MPI plugin is missing.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { Distributed, EMAE, Trainer, cudaInfo, initDistributed, launcherEnvironment, readSafetensors } from '../lib/index.js';
import { native } from '../lib/native.js';
import { gratings } from './helpers/synthetic.js';

const root = path.resolve(import.meta.dirname, '..');
const helper = path.join(root, 'test', 'helpers', 'dp-train.ts');
const cli = path.join(root, 'lib', 'cli.ts');
const tmp = () => mkdtempSync(path.join(tmpdir(), 'emae-dist-'));

const build = (native() as unknown as { distBuildInfo(): { mpi: boolean; mpiPlugin: string } }).distBuildInfo();
const mpirun = spawnSync('sh', ['-c', 'command -v mpirun'], { encoding: 'utf8' }).stdout.trim();
const skipWhy = !mpirun ? 'mpirun is not on PATH (install Open MPI: apt-get install openmpi-bin libopenmpi-dev)'
  : !build.mpi ? 'the addon was built without MPI (CMake found none; install libopenmpi-dev and rebuild)' : undefined;
if (skipWhy) console.log(`distributed.test: multi-process tests skipped: ${skipWhy}`);
const mp = skipWhy ? test.skip : test.serial;

// Open MPI refuses root unless told; CI and these test machines run as root. No launcher
// variables leak in from an outer job.
const mpiEnv = () => {
  const env: NodeJS.ProcessEnv = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' };
  for (const k of Object.keys(env)) if (/^(OMPI_COMM_WORLD|PMI_|PMIX_|SLURM_)/.test(k)) delete env[k];
  return env;
};
const mpiArgs = ['-np', '2', '--oversubscribe', '--bind-to', 'none'];

interface Run { code: number | null; signal: NodeJS.Signals | null; output: string; seconds: number }
function run(cmd: string, args: string[], options: { onStart?: (pid: number) => void; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(cmd, args, { cwd: root, env: mpiEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => { output += d; });
    child.stderr.on('data', (d) => { output += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output, seconds: (performance.now() - started) / 1000 });
    });
    options.onStart?.(child.pid!);
  });
}
const trainOnce = (opts: object) => run(process.execPath, ['--import=tsx', helper, JSON.stringify(opts)]);
const trainOnTwo = (opts: object) => run(mpirun, [...mpiArgs, process.execPath, '--import=tsx', helper, JSON.stringify(opts)]);

interface RankResult { rank: number; worldSize: number; step: number; losses: number[]; hashes: string[]; error?: string; final: string }
const result = (dir: string, rank: number): RankResult => JSON.parse(readFileSync(path.join(dir, `rank-${rank}.json`), 'utf8'));

function l2(x: Float32Array): number {
  let s = 0;
  for (const v of x) s += v * v;
  return Math.sqrt(s);
}
function relL2(a: Float32Array, b: Float32Array): number {
  const d = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) d[i] = a[i] - b[i];
  const n = l2(b);
  return n === 0 ? l2(d) : l2(d) / n;
}

// The attention key bias (the middle third of each qkv.bias) has an exactly zero true gradient
// (softmax ignores a per-query constant), so it moves only by rounding noise that AdamW
// normalizes to lr-sized steps; it is left out of the comparison, as the issue allows.
function withoutKeyBias(name: string, data: Float32Array): Float32Array {
  if (!/attn\.qkv\.bias$/.test(name)) return data;
  const d = data.length / 3;
  const out = Float32Array.from(data);
  out.fill(0, d, 2 * d);
  return out;
}

/** Largest relative L2 error over the checkpoint's tensors (param., exp_avg., exp_avg_sq.), key bias left out. */
function compareCheckpoints(a: string, b: string): { worst: number; name: string; count: number } {
  const ta = readSafetensors(readFileSync(a)).tensors, tb = readSafetensors(readFileSync(b)).tensors;
  let worst = 0, worstName = '', count = 0;
  for (const name of Object.keys(tb)) {
    const x = withoutKeyBias(name, ta[name].data as Float32Array), y = withoutKeyBias(name, tb[name].data as Float32Array);
    const e = relL2(x, y);
    count++;
    if (e > worst) [worst, worstName] = [e, name];
  }
  return { worst, name: worstName, count };
}

function assertEquivalent(t: import('ava').ExecutionContext, one: string, two: string, steps: number, tol = 1e-5) {
  const ref = result(one, 0), r0 = result(two, 0), r1 = result(two, 1);
  t.is(r0.worldSize, 2);
  t.is(ref.losses.length, steps);
  t.is(r0.losses.length, steps);
  t.deepEqual(r0.hashes, r1.hashes, 'the two ranks hold bitwise identical parameters after every step');
  t.is(r0.final, r1.final, 'and identical AdamW moments at the end');
  const lossErr = Math.max(...ref.losses.map((l, i) => Math.abs(r0.losses[i] - l) / Math.abs(l)));
  t.true(lossErr < tol, `losses within ${tol} relative (worst ${lossErr.toExponential(2)})`);
  const logged = readFileSync(path.join(two, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).loss);
  t.deepEqual(logged, r0.losses, 'rank 0 logs the global mean loss');
  const cmp = compareCheckpoints(path.join(two, `ckpt-${steps}.safetensors`), path.join(one, `ckpt-${steps}.safetensors`));
  t.true(cmp.worst < tol, `every parameter and AdamW moment within ${tol} relative L2 (worst ${cmp.worst.toExponential(2)} in ${cmp.name})`);
  t.log(`loss rel err ${lossErr.toExponential(2)}; worst tensor rel L2 ${cmp.worst.toExponential(2)} (${cmp.name}) over ${cmp.count} tensors`);
}

mp('2 ranks × batch 8 for 20 steps = 1 process × batch 16 (EMAE K=4)', async (t) => {
  const one = tmp(), two = tmp();
  const a = await trainOnce({ batch: 16, steps: 20, out: one });
  t.is(a.code, 0, a.output);
  const b = await trainOnTwo({ batch: 8, steps: 20, out: two });
  t.is(b.code, 0, b.output);
  assertEquivalent(t, one, two, 20);
});

mp('the same with gradient accumulation: 2 ranks × 4 × 2 micro-batches = 1 × 8 × 2', async (t) => {
  const one = tmp(), two = tmp();
  t.is((await trainOnce({ batch: 8, accumulate: 2, steps: 20, out: one })).code, 0);
  const b = await trainOnTwo({ batch: 4, accumulate: 2, steps: 20, out: two });
  t.is(b.code, 0, b.output);
  assertEquivalent(t, one, two, 20);
});

mp('the same for plain MAE (K=1)', async (t) => {
  const one = tmp(), two = tmp();
  t.is((await trainOnce({ batch: 16, steps: 20, parts: 1, out: one })).code, 0);
  const b = await trainOnTwo({ batch: 8, steps: 20, parts: 1, out: two });
  t.is(b.code, 0, b.output);
  assertEquivalent(t, one, two, 20);
});

mp('a stop on one rank stops both at the same step; resumed, the run equals an uninterrupted one; and resumes on 1 rank', async (t) => {
  const whole = tmp(), cut = tmp(), single = tmp();
  t.is((await trainOnTwo({ batch: 8, steps: 12, out: whole })).code, 0);
  // stop() on rank 1 after step 5 (as a signal would): the ranks agree on it in the next step's
  // all-reduce, so both stop after step 6
  const first = await trainOnTwo({ batch: 8, steps: 12, out: cut, stopAt: 5, stopRank: 1 });
  t.is(first.code, 0, first.output);
  const at = result(cut, 0).step;
  t.is(at, 6, 'rank 0 stopped with rank 1, one step after the request');
  t.is(result(cut, 1).step, at);
  t.true(existsSync(path.join(cut, `ckpt-${at}.safetensors`)));
  // a copy of the stopped run, to resume on one process with batch 16 (same global batch)
  writeFileSync(path.join(single, `ckpt-${at}.safetensors`), readFileSync(path.join(cut, `ckpt-${at}.safetensors`)));
  const second = await trainOnTwo({ batch: 8, steps: 12, out: cut, resume: true });
  t.is(second.code, 0, second.output);
  const w = result(whole, 0), c = result(cut, 0);
  t.deepEqual(c.losses, w.losses.slice(at), 'the resumed steps have the losses of the uninterrupted run, bitwise');
  t.is(c.final, w.final, 'and end with bitwise the same parameters and moments');
  const wrong = await trainOnce({ batch: 8, steps: 12, out: single, resume: true });
  t.not(wrong.code, 0);
  t.regex(wrong.output, /global batch of 16 \(batch 8 × 2 ranks, accumulate 1\); this run has a global batch of 8/);
  const solo = await trainOnce({ batch: 16, steps: 12, out: single, resume: true });
  t.is(solo.code, 0, solo.output);
  const lossErr = Math.max(...result(single, 0).losses.map((l, i) => Math.abs(l - w.losses[at + i]) / Math.abs(w.losses[at + i])));
  t.true(lossErr < 1e-5, `a 2-rank checkpoint resumed on 1 rank with batch 16 continues the run (worst ${lossErr.toExponential(2)})`);
});

mp('SIGINT to the ranks of a CLI run: both stop together, rank 0 checkpoints, and --resume finishes the run', async (t) => {
  const out = tmp();
  const args = [...mpiArgs, process.execPath, '--import=tsx', cli, 'pretrain', '--data', 'synthetic:64', '--image-size', '16',
    '--config', path.join(root, 'test', 'fixtures', 'dist-tiny.json'), '--device', 'cpu', '--threads', '1', '--batch', '8',
    '--steps', '400', '--checkpoint-every', '0', '--no-progress', '--out', out];
  let mpirunPid = 0;
  const stopped = run(mpirun, args, { onStart: (pid) => { mpirunPid = pid; } });
  const log = path.join(out, 'log.jsonl');
  for (let i = 0; i < 600 && !(existsSync(log) && readFileSync(log, 'utf8').split('\n').length > 4); i++) await new Promise((r) => setTimeout(r, 100));
  const ranks = spawnSync('pgrep', ['-P', String(mpirunPid)], { encoding: 'utf8' }).stdout.trim().split('\n').map(Number);
  t.is(ranks.length, 2, 'mpirun has two rank processes');
  for (const pid of ranks) process.kill(pid, 'SIGINT');
  const first = await stopped;
  t.regex(first.output, /SIGINT: stopped at step (\d+)/);
  const at = Number(/stopped at step (\d+)/.exec(first.output)![1]);
  t.true(at < 400);
  t.true(existsSync(path.join(out, `ckpt-${at}.safetensors`)), `rank 0 wrote ckpt-${at}`);
  t.is(first.output.match(/"distributed"/g)?.length, 1, 'one resolved configuration is printed (rank 0)');
  const second = await run(mpirun, [...args, '--resume']);
  t.is(second.code, 0, second.output);
  t.regex(second.output, new RegExp(`resumed at step ${at}`));
  t.regex(second.output, /done: 400 steps/);
});

mp('a rank killed with SIGKILL ends the job with a message naming it, in under 30 s', async (t) => {
  const out = tmp();
  let mpirunPid = 0;
  const running = run(mpirun, [...mpiArgs, process.execPath, '--import=tsx', helper, JSON.stringify({ batch: 8, steps: 100000, out })],
    { onStart: (pid) => { mpirunPid = pid; } });
  await new Promise((r) => setTimeout(r, 4000));
  const ranks = spawnSync('pgrep', ['-P', String(mpirunPid)], { encoding: 'utf8' }).stdout.trim().split('\n').map(Number);
  t.is(ranks.length, 2);
  const killedAt = performance.now();
  process.kill(ranks[1], 'SIGKILL');
  const r = await running;
  const seconds = (performance.now() - killedAt) / 1000;
  t.not(r.code, 0);
  t.regex(r.output, /rank 1 with PID \d+ on node \S+ exited on signal 9/);
  t.true(seconds < 30, `the job ended ${seconds.toFixed(1)} s after the kill`);
  t.log(`job ended ${seconds.toFixed(2)} s after SIGKILL of rank 1`);
});

// A failure on one rank inside Trainer.run() reaches every rank at the next collective they all
// make (the step's losses all-reduce, or the agreement before the first step or after the last):
// every rank throws — the failing one its own error, the others one naming it — and the job ends
// without MPI_Abort. `noAbort`: the ranks only record their errors, as a Trainer user who never
// calls dist.abort() would; a rank left waiting would show as the time bound failing (the child
// is killed after 60 s).
const failingOnTwo = (opts: object) => run(mpirun, [...mpiArgs, process.execPath, '--import=tsx', helper, JSON.stringify({ ...opts, noAbort: true })],
  { timeoutMs: 60_000 });

mp('a batch that fails to load on rank 1 stops both ranks at that step, each error naming rank 1, in under 30 s', async (t) => {
  const out = tmp();
  const r = await failingOnTwo({ batch: 8, steps: 20, out, failRank: 1, failAt: 3 });
  t.true(r.seconds < 30, `ended in ${r.seconds.toFixed(1)} s`);
  t.not(r.code, 0);
  const r0 = result(out, 0), r1 = result(out, 1);
  t.regex(r1.error ?? '', /^rank 1 of 2: shard-1\.bin: record \d+ is corrupted \(bad checksum\)$/, 'rank 1 throws its own error');
  t.regex(r0.error ?? '', /^rank 1 failed at step 3 \(see its error\); rank 0 of 2 stopped too$/);
  t.is(r0.code, 'EMAE_RANK_FAILED');
  t.deepEqual([r0.step, r1.step], [2, 2], 'neither rank took step 3');
});

mp('with gradient accumulation, a failure in micro-batch 1 of 3 stops both ranks at that step', async (t) => {
  const out = tmp();
  // load 7 = step 3, micro-batch 1
  const r = await failingOnTwo({ batch: 4, accumulate: 3, steps: 5, out, failRank: 1, failAt: 7 });
  t.true(r.seconds < 30, `ended in ${r.seconds.toFixed(1)} s`);
  const r0 = result(out, 0), r1 = result(out, 1);
  t.regex(r1.error ?? '', /^rank 1 of 2: shard-1\.bin: record \d+ is corrupted/);
  t.regex(r0.error ?? '', /^rank 1 failed at step 3 \(see its error\); rank 0 of 2 stopped too$/);
  t.deepEqual([r0.step, r1.step], [2, 2]);
});

mp('rank 0 failing to write a checkpoint stops both ranks, mid-run and at the last step, naming rank 0', async (t) => {
  const out = tmp();
  const r = await failingOnTwo({ batch: 8, steps: 20, out, checkpointEvery: 2, blockCheckpointAt: 4 });
  t.true(r.seconds < 30, `ended in ${r.seconds.toFixed(1)} s`);
  t.not(r.code, 0);
  const r0 = result(out, 0), r1 = result(out, 1);
  t.regex(r0.error ?? '', /^rank 0 of 2: training stopped at step 4: could not write the checkpoint of step 4 .*the last good checkpoint is .*ckpt-2\.safetensors$/);
  // rank 1 learns it in step 5's losses all-reduce, before computing anything after it
  t.regex(r1.error ?? '', /^rank 0 failed at step 4 \(see its error\); rank 1 of 2 stopped too$/);
  t.is(r1.code, 'EMAE_RANK_FAILED');
  t.deepEqual([r0.step, r1.step], [4, 4]);
  // the last step's checkpoint: no step follows, the agreement that ends run() tells rank 1
  const end = tmp();
  const e = await failingOnTwo({ batch: 8, steps: 4, out: end, checkpointEvery: 2, blockCheckpointAt: 4 });
  t.true(e.seconds < 30, `ended in ${e.seconds.toFixed(1)} s`);
  t.regex(result(end, 0).error ?? '', /^rank 0 of 2: training stopped at step 4: could not write the checkpoint of step 4/);
  t.regex(result(end, 1).error ?? '', /^rank 0 failed at step 4 \(see its error\); rank 1 of 2 stopped too$/);
});

mp('a non-empty outDir refused by rank 0 ends every rank with an error, before the first step', async (t) => {
  const out = tmp();
  writeFileSync(path.join(out, 'notes.txt'), 'an earlier run');
  const r = await failingOnTwo({ batch: 8, steps: 20, out });
  t.true(r.seconds < 30, `ended in ${r.seconds.toFixed(1)} s`);
  t.not(r.code, 0);
  const r0 = result(out, 0), r1 = result(out, 1);
  t.is(r0.code, 'EMAE_OUT_NOT_EMPTY');
  t.regex(r0.error ?? '', /^rank 0 of 2: the output folder .* is not empty \(notes\.txt\)/);
  t.is(r1.code, 'EMAE_RANK_FAILED');
  t.is(r1.error, `rank 0 refused the output folder ${out} (see its error); rank 1 of 2 stopped too`);
  t.deepEqual([r0.step, r1.step, r0.losses.length, r1.losses.length], [0, 0, 0, 0]);
});

mp('a non-empty --out of a CLI run: rank 0 says why and every rank ends without MPI_Abort', async (t) => {
  const out = tmp();
  writeFileSync(path.join(out, 'notes.txt'), 'an earlier run');
  const r = await run(mpirun, [...mpiArgs, process.execPath, '--import=tsx', cli, 'pretrain', '--data', 'synthetic:64', '--image-size', '16',
    '--config', path.join(root, 'test', 'fixtures', 'dist-tiny.json'), '--device', 'cpu', '--threads', '1', '--batch', '8',
    '--steps', '5', '--no-progress', '--out', out], { timeoutMs: 60_000 });
  t.true(r.seconds < 30, `ended in ${r.seconds.toFixed(1)} s`);
  t.not(r.code, 0);
  t.regex(r.output, /emae: rank 0 of 2: the output folder .* is not empty \(notes\.txt\)/);
  // the ranks exit by themselves (mpirun says so; after an MPI_Abort it prints its banner instead)
  t.regex(r.output, /exited with non-zero status/);
  t.notRegex(r.output, /MPI_ABORT|rank 0 refused/, 'no MPI_Abort; rank 1 (not the one that failed) prints nothing');
});

mp('images that do not decode on rank 1 of a CLI run: rank 1 prints its error, rank 0 names rank 1, no MPI_Abort', async (t) => {
  const dir = tmp();
  // the same 32 file names on both ranks' disks; rank 1's copies are cut short: their headers
  // read (the folder opens) but no pixels decode, so its first batch fails inside the step
  for (const side of ['good', 'bad']) mkdirSync(path.join(dir, side));
  for (let i = 0; i < 32; i++) {
    const pixels = Buffer.alloc(16 * 16 * 3).map((_, j) => (j * 7 + i * 13) % 256);
    const png = await sharp(pixels, { raw: { width: 16, height: 16, channels: 3 } }).png().toBuffer();
    writeFileSync(path.join(dir, 'good', `${i}.png`), png);
    writeFileSync(path.join(dir, 'bad', `${i}.png`), png.subarray(0, Math.floor(png.length * 0.6)));
  }
  const script = `if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then D=${path.join(dir, 'bad')}; else D=${path.join(dir, 'good')}; fi; exec "${process.execPath}" --import=tsx ${cli} ` +
    `pretrain --data folder:$D --image-size 16 --config ${path.join(root, 'test', 'fixtures', 'dist-tiny.json')} --device cpu --threads 1 --workers 0 ` +
    `--batch 4 --steps 5 --no-progress --out ${path.join(dir, 'run')}`;
  const r = await run(mpirun, [...mpiArgs, 'sh', '-c', script], { timeoutMs: 60_000 });
  t.true(r.seconds < 30, `ended in ${r.seconds.toFixed(1)} s`);
  t.not(r.code, 0);
  t.regex(r.output, /emae: rank 1 of 2: .*no readable image/);
  t.regex(r.output, /emae: rank 1 failed at step 1 \(see its error\); rank 0 of 2 stopped too/);
  t.regex(r.output, /exited with non-zero status/);
  t.notRegex(r.output, /MPI_ABORT/);
});

mp('a corrupted data file on one rank of a CLI run is reported with the rank named', async (t) => {
  const dir = tmp();
  const good = path.join(dir, 'good.idx'), bad = path.join(dir, 'bad.idx');
  const header = Buffer.from([0, 0, 8, 3, 0, 0, 0, 40, 0, 0, 0, 16, 0, 0, 0, 16]);
  writeFileSync(good, Buffer.concat([header, Buffer.alloc(40 * 256, 7)]));
  writeFileSync(bad, Buffer.concat([header, Buffer.alloc(1000, 7)]));  // truncated copy on rank 1's disk
  const script = `if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then D=${bad}; else D=${good}; fi; exec "${process.execPath}" --import=tsx ${cli} ` +
    `pretrain --data idx:$D --config ${path.join(root, 'test', 'fixtures', 'dist-tiny.json')} --device cpu --threads 1 --batch 4 --steps 5 --out ${path.join(dir, 'run')}`;
  const r = await run(mpirun, [...mpiArgs, 'sh', '-c', script]);
  t.not(r.code, 0);
  t.regex(r.output, /emae: rank 1 of 2: .*bad\.idx/);
  t.true(r.seconds < 30, `ended in ${r.seconds.toFixed(1)} s`);
});

mp('a non-finite loss on one rank stops every rank at the same step, cleanly', async (t) => {
  const out = tmp();
  const r = await trainOnTwo({ batch: 8, steps: 20, out, nanRank: 1 });
  t.not(r.code, 0);
  const r0 = result(out, 0), r1 = result(out, 1);
  t.is(r0.step, r1.step, 'both stopped after the same step');
  t.is(r0.step, 2);
  t.regex(r0.error ?? '', /training stopped at step 3: the loss is not finite on at least one rank/);
  t.is(r0.error, r1.error);
});

// ---- one process -----------------------------------------------------------------------------

test('without a launcher, initDistributed() is a one-rank job that needs no MPI', async (t) => {
  if (launcherEnvironment()) return t.pass('this test process was itself started by a launcher');
  const dist = await initDistributed();
  t.true(dist instanceof Distributed);
  t.is(dist.worldSize, 1);
  t.is(dist.rank, 0);
  t.is(dist.collectives, 'none');
  t.is(await initDistributed(), dist, 'a second call returns the same job');
  const x = Float64Array.of(1, 2, 3);
  t.deepEqual(await dist.allReduce(x, 'mean'), x);
  const model = await EMAE.create({ imageSize: 8, patchSize: 2, embedDim: 8, depth: 1, numHeads: 2, decoderEmbedDim: 8,
    decoderDepth: 1, decoderNumHeads: 2, device: 'cpu', threads: 1 });
  await dist.allReduceGradients(model);
  await dist.barrier();
  await model.dispose();
});

test('bad distributed options are clear errors', async (t) => {
  await t.throwsAsync(initDistributed({ collectives: 'gloo' as never }), { instanceOf: RangeError, message: /collectives/ });
  await t.throwsAsync(initDistributed({ collectives: 3 as never }), { instanceOf: TypeError, message: /collectives/ });
  await t.throwsAsync(initDistributed({ worldSize: 0 }), { instanceOf: RangeError, message: /worldSize/ });
  await t.throwsAsync(initDistributed({ bucketMiB: 0 }), { instanceOf: RangeError, message: /bucketMiB/ });
  await t.throwsAsync(initDistributed({ world: 2 } as never), { message: /world/ });
  if (!launcherEnvironment()) {
    await t.throwsAsync(initDistributed({ worldSize: 2 }), { message: /worldSize 2 was asked for, but no MPI launcher started this process.*mpirun -np 2/ });
  }
  const dist = await initDistributed();
  await t.throwsAsync(dist.allReduce([1, 2] as never), { instanceOf: TypeError, message: /data/ });
  await t.throwsAsync(dist.allReduce(new Float32Array(2), 'avg' as never), { instanceOf: RangeError, message: /op/ });
  await t.throwsAsync(dist.allReduceGradients({} as never), { instanceOf: TypeError, message: /model/ });
  const model = await EMAE.create({ imageSize: 8, patchSize: 2, embedDim: 8, depth: 1, numHeads: 2, decoderEmbedDim: 8,
    decoderDepth: 1, decoderNumHeads: 2, device: 'cpu', threads: 1 });
  t.throws(() => new Trainer(model, { images: new Float32Array(4 * 192), count: 4 }, { batchSize: 2, steps: 1, distributed: {} as never }),
    { instanceOf: TypeError, message: /distributed/ });
  t.throws(() => new (Distributed as never as new (...a: unknown[]) => unknown)(Symbol('x'), {}, 1), { instanceOf: TypeError, message: /initDistributed/ });
  await model.dispose();
});

test('launcherEnvironment reads Open MPI, Hydra and Slurm variables', (t) => {
  t.deepEqual(launcherEnvironment({ OMPI_COMM_WORLD_SIZE: '4', OMPI_COMM_WORLD_RANK: '2', OMPI_COMM_WORLD_LOCAL_RANK: '0' }),
    { launcher: 'open-mpi', worldSize: 4, rank: 2, localRank: 0 });
  t.deepEqual(launcherEnvironment({ PMI_SIZE: '2', PMI_RANK: '1', MPI_LOCALRANKID: '1' }), { launcher: 'mpich', worldSize: 2, rank: 1, localRank: 1 });
  t.deepEqual(launcherEnvironment({ SLURM_STEP_NUM_TASKS: '8', SLURM_PROCID: '5', SLURM_LOCALID: '1' }), { launcher: 'slurm', worldSize: 8, rank: 5, localRank: 1 });
  t.is(launcherEnvironment({ SLURM_NTASKS: '8' }), undefined, 'an allocation alone (sbatch, no srun step) is not a launch');
  t.is(launcherEnvironment({}), undefined);
});

test('more than one rank in a build without MPI says what to install', (t) => {
  // a child process that looks like rank 0 of 2 but whose MPI plugin is missing
  const r = spawnSync(process.execPath, ['--import=tsx', '--input-type=module', '-e',
    `import { initDistributed } from './lib/index.js'; try { await initDistributed(); } catch (e) { console.log(e.message); }`],
  { cwd: root, encoding: 'utf8', env: { ...mpiEnv(), OMPI_COMM_WORLD_SIZE: '2', OMPI_COMM_WORLD_RANK: '0', EMAE_MPI_PLUGIN: '/nonexistent/emae_mpi.so' } });
  t.regex(r.stdout, /rank 0 of 2: .*could not load emae's MPI plugin \/nonexistent\/emae_mpi\.so.*install Open MPI \(Debian\/Ubuntu: apt-get install openmpi-bin libopenmpi-dev/s);
});

test('the Trainer refuses a checkpoint of another global batch, naming both, and leaves the model as it was', async (t) => {
  const dir = tmp();
  const config = { imageSize: 8, patchSize: 2, channels: 3, embedDim: 8, depth: 1, numHeads: 2, decoderEmbedDim: 8, decoderDepth: 1,
    decoderNumHeads: 2, device: 'cpu' as const, threads: 1 };
  const data = { images: gratings(16, 3, 8, 1), count: 16 };
  const model = await EMAE.create(config);
  await new Trainer(model, data, { batchSize: 8, steps: 1, outDir: dir }).run();
  // a refused checkpoint is refused before it is loaded: the model and its AdamW state are as before
  const fresh = await EMAE.create({ ...config, seed: 3 });
  const before = await fresh.stateDict(), stepBefore = (await fresh.getOptimizerState()).step;
  const other = new Trainer(fresh, data, { batchSize: 4, steps: 2, outDir: dir });
  await t.throwsAsync(other.resume(), { message: /global batch of 8 \(batch 8 × 1 rank, accumulate 1\); this run has a global batch of 4/ });
  t.deepEqual(await fresh.stateDict(), before);
  t.is((await fresh.getOptimizerState()).step, stepBefore);
  await model.dispose();
  await fresh.dispose();
});

mp('allReduce across 2 ranks: sum, mean, max and min of Float32Array and Float64Array', async (t) => {
  const dir = tmp();
  const script = path.join(dir, 'reduce.mts');  // an ES module (top-level await) outside the package
  writeFileSync(script, `
    import { writeFileSync } from 'node:fs';
    import { initDistributed } from ${JSON.stringify(path.join(root, 'lib', 'index.js'))};
    const dist = await initDistributed();
    const r = dist.rank;
    const out = {
      sum32: [...await dist.allReduce(Float32Array.of(r + 1, 0.5), 'sum')],
      mean64: [...await dist.allReduce(Float64Array.of(2 * r, 1e300), 'mean')],
      max32: [...await dist.allReduce(Float32Array.of(r, -r), 'max')],
      min64: [...await dist.allReduce(Float64Array.of(r, -r), 'min')],
      type32: (await dist.allReduce(new Float32Array(1), 'sum')).constructor.name,
      type64: (await dist.allReduce(new Float64Array(1), 'sum')).constructor.name,
    };
    writeFileSync(${JSON.stringify(dir)} + '/reduce-' + r + '.json', JSON.stringify(out));
    await dist.finalize();
  `);
  const r = await run(mpirun, [...mpiArgs, process.execPath, '--import=tsx', script]);
  t.is(r.code, 0, r.output);
  for (const rank of [0, 1]) {
    const out = JSON.parse(readFileSync(path.join(dir, `reduce-${rank}.json`), 'utf8'));
    t.deepEqual(out, { sum32: [3, 1], mean64: [1, 1e300], max32: [1, 0], min64: [0, -1], type32: 'Float32Array', type64: 'Float64Array' }, `rank ${rank}`);
  }
});

// One process asking for NCCL: a one-rank communicator through the whole data-parallel step
// (accumulate, NCCL all-reduce, apply), which must train as the plain step does. Runs in a child
// process (a process joins one job at most); needs a CUDA device and libnccl.so.2 (on the GPU
// machine: EMAE_NCCL_LIBRARY=<site-packages>/nvidia/nccl/lib/libnccl.so.2).
const singleNccl = async (device: 'cpu' | 'cuda') => {
  const dir = tmp();
  const script = path.join(dir, 'single-nccl.mts');
  writeFileSync(script, `
    import { writeFileSync } from 'node:fs';
    import { EMAE, Trainer, initDistributed } from ${JSON.stringify(path.join(root, 'lib', 'index.js'))};
    const out = { error: '', plain: [] as number[], nccl: [] as number[], collectives: '' };
    try {
      const dist = await initDistributed({ collectives: 'nccl' });
      out.collectives = dist.collectives;
      const config = { imageSize: 16, patchSize: 4, channels: 3, embedDim: 32, depth: 1, numHeads: 2, decoderEmbedDim: 32,
        decoderDepth: 1, decoderNumHeads: 2, mlpRatio: 2, device: '${device}' as const, seed: 3 };
      const images = new Float32Array(32 * 3 * 16 * 16).map((_, i) => Math.sin(i * 0.37));
      for (const [name, extra] of [['plain', {}], ['nccl', { distributed: dist }]] as const) {
        const model = await EMAE.create(config);
        await new Trainer(model, { images, count: 32 }, { batchSize: 8, steps: 5, blr: 1e-2, seed: 1, ...extra,
          onStep: (s) => { out[name].push(s.loss); } }).run();
        await model.dispose();
      }
      await dist.finalize();
    } catch (err) {
      out.error = (err as Error).message;
    }
    writeFileSync(${JSON.stringify(path.join(dir, 'out.json'))}, JSON.stringify(out));
  `);
  const r = await run(process.execPath, ['--import=tsx', script]);
  return { code: r.code, output: r.output, ...JSON.parse(readFileSync(path.join(dir, 'out.json'), 'utf8')) };
};

{
  const info = cudaInfo();
  // where a GPU is usable the test below runs the step instead
  (info.compiled && info.devices.length > 0 ? test.skip : test)('one process with collectives nccl: a clear error without a GPU or NCCL', async (t) => {
    const r = await singleNccl('cpu');
    t.is(r.code, 0, r.output);
    t.regex(r.error, /^initDistributed: collectives 'nccl' was asked for but NCCL is not usable: (no CUDA device|this build of emae has no CUDA backend)/);
  });
}

{
  const info = cudaInfo();
  const why = !info.compiled ? 'the addon has no CUDA backend' : info.devices.length === 0 ? `no CUDA device (${info.error})` : undefined;
  if (why) console.log(`distributed.test: the one-process NCCL step is skipped: ${why}`);
  (why ? test.skip : test.serial)('one process over NCCL trains as the plain step does (GPU)', async (t) => {
    const r = await singleNccl('cuda');
    t.is(r.error, '', r.output);
    t.is(r.collectives, 'nccl');
    t.is(r.nccl.length, 5);
    for (let i = 0; i < 5; i++) t.true(Math.abs(r.nccl[i] - r.plain[i]) <= 1e-5 * Math.abs(r.plain[i]), `step ${i + 1}: ${r.nccl[i]} vs ${r.plain[i]}`);
  });
}

// Two ranks sharing the one GPU (issue 13's device check): NCCL refuses two ranks on one device
// before 2.30, so 'mpi' stages the CUDA gradients through the host. They must compute the step of
// one process with the whole batch, as on the CPU. The tolerance is 1e-4, not the CPU's 1e-5: the
// CUDA GEMMs tile a batch of 8 and one of 16 differently, so more of the sums change order; the
// ranks must still agree bitwise. Runs where mpirun, the MPI plugin and a CUDA device all are
// (scripts/gpu-check.sh's dist phase); skipped, saying why, elsewhere.
{
  const info = cudaInfo();
  const why = skipWhy ?? (!info.compiled ? 'the addon has no CUDA backend' : info.devices.length === 0 ? `no CUDA device (${info.error})` : undefined);
  if (why) console.log(`distributed.test: two ranks on one GPU skipped: ${why}`);
  (why ? test.skip : test.serial)('2 ranks on one GPU through the host-staged MPI path × batch 8 = 1 process × batch 16 (GPU)', async (t) => {
    const one = tmp(), two = tmp();
    const a = await trainOnce({ batch: 16, steps: 20, out: one, device: 'cuda' });
    t.is(a.code, 0, a.output);
    const b = await trainOnTwo({ batch: 8, steps: 20, out: two, device: 'cuda' });
    t.is(b.code, 0, b.output);
    assertEquivalent(t, one, two, 20, 1e-4);
  });
}

// An MPI world of one rank (`mpirun -np 1`, or a launcher whose MPI sees a single process):
// initDistributed() makes no MPI job of it, so this joins through the addon directly. Every
// collective is then the identity and reaches neither MPI nor NCCL: the gradient all-reduce
// neither copies nor calls (for a CUDA model it used to stage the gradients through the host and
// call MPI_Allreduce), and the step equals the plain one bitwise.
mp('an MPI world of one rank makes no collective call; its all-reduced step equals the plain one bitwise', async (t) => {
  const dir = tmp();
  const script = path.join(dir, 'one-rank.mts');
  writeFileSync(script, `
    import { writeFileSync } from 'node:fs';
    import { EMAE } from ${JSON.stringify(path.join(root, 'lib', 'index.js'))};
    import { withNativeHandle } from ${JSON.stringify(path.join(root, 'lib', 'model.js'))};
    import { native } from ${JSON.stringify(path.join(root, 'lib', 'native.js'))};
    const a = native() as any;
    const init = await a.distInit({ collectives: 'auto' });
    const reduced = [...await a.distAllReduce(Float64Array.of(1.5, -2, 3e300), 'sum')];
    const config = { imageSize: 8, patchSize: 2, embedDim: 8, depth: 1, numHeads: 2, decoderEmbedDim: 8, decoderDepth: 1,
      decoderNumHeads: 2, device: 'cpu' as const, threads: 1, seed: 3 };
    const B = 4, N = 16;
    const images = new Float32Array(B * 3 * 8 * 8).map((_, i) => Math.sin(i * 0.37));
    const permutation = Int32Array.from({ length: B * N }, (_, i) => (i * 7 + Math.floor(i / N)) % N);
    const step = async (allReduce: boolean) => {
      const model = await EMAE.create(config);
      await model.accumulateGradients({ images, permutation, batchSize: B }, { reset: true });
      if (allReduce) await withNativeHandle(model, (h) => a.distAllReduceGrads(h, { average: true, bucketFloats: 100 }));
      await model.applyGradients({ lr: 1e-2 });
      const params = await model.stateDict();
      await model.dispose();
      return Object.keys(params).sort().map((k) => Buffer.from(params[k].buffer, params[k].byteOffset, params[k].byteLength).toString('base64')).join();
    };
    const plain = await step(false), allReduced = await step(true);
    await a.distBarrier();
    const calls = a.distStatus().collectiveCalls;
    await a.distFinalize();
    writeFileSync(${JSON.stringify(path.join(dir, 'out.json'))}, JSON.stringify({ size: init.size, reduced, same: plain === allReduced, calls }));
  `);
  const r = await run(mpirun, ['-np', '1', '--bind-to', 'none', process.execPath, '--import=tsx', script]);
  t.is(r.code, 0, r.output);
  const out = JSON.parse(readFileSync(path.join(dir, 'out.json'), 'utf8'));
  t.is(out.size, 1);
  t.deepEqual(out.reduced, [1.5, -2, 3e300]);
  t.true(out.same, 'parameters after an all-reduced step equal those after the plain step, bitwise');
  t.is(out.calls, 0, 'no MPI or NCCL collective was called');
});

// MPI_Init_thread granting less than MPI_THREAD_FUNNELED (an MPI built without thread support):
// a PMPI shim, compiled here with mpicc and preloaded, grants MPI_THREAD_SINGLE. The plugin must
// finalize MPI and say why, and a second initDistributed in the process must be a clear error,
// not a call of MPI_Init_thread after MPI_Finalize (which aborts) nor a job on a refused MPI.
const mpicc = spawnSync('sh', ['-c', 'command -v mpicc'], { encoding: 'utf8' }).stdout.trim();
(skipWhy || !mpicc ? test.skip : test.serial)('an MPI without thread support: MPI is finalized, and both attempts to join say why', async (t) => {
  const dir = tmp();
  writeFileSync(path.join(dir, 'single.c'), `#include <mpi.h>
int MPI_Init_thread(int* argc, char*** argv, int required, int* provided) {
  const int rc = PMPI_Init_thread(argc, argv, MPI_THREAD_SINGLE, provided);
  *provided = MPI_THREAD_SINGLE;
  return rc;
}
`);
  const shim = path.join(dir, 'single.so');
  const cc = spawnSync(mpicc, ['-shared', '-fPIC', '-o', shim, path.join(dir, 'single.c')], { encoding: 'utf8' });
  t.is(cc.status, 0, cc.stderr);
  const script = path.join(dir, 'thread-level.mts');
  writeFileSync(script, `
    import { writeFileSync } from 'node:fs';
    import { initDistributed } from ${JSON.stringify(path.join(root, 'lib', 'index.js'))};
    const errors: string[] = [];
    for (let i = 0; i < 2; i++) {
      try { await initDistributed({ collectives: 'mpi' }); errors.push(''); } catch (err) { errors.push((err as Error).message); }
    }
    writeFileSync(${JSON.stringify(dir)} + '/out-' + process.env.OMPI_COMM_WORLD_RANK + '.json', JSON.stringify(errors));
  `);
  const r = await run(mpirun, [...mpiArgs, '-x', `LD_PRELOAD=${shim}`, process.execPath, '--import=tsx', script], { timeoutMs: 60_000 });
  t.is(r.code, 0, r.output);
  t.notRegex(r.output, /exited without calling|MPI_Finalize|MPI_Init_thread|ERROR/, 'Open MPI reports nothing: MPI was finalized, and not started twice');
  for (const rank of [0, 1]) {
    const [first, second] = JSON.parse(readFileSync(path.join(dir, `out-${rank}.json`), 'utf8'));
    t.regex(first, new RegExp(`^rank ${rank} of 2: initDistributed: the MPI library \\(.*\\) provides only MPI_THREAD_SINGLE; emae needs MPI_THREAD_FUNNELED or more.*; MPI was finalized, and cannot be initialized again in this process$`));
    t.regex(second, new RegExp(`^rank ${rank} of 2: initDistributed: an earlier initialization failed \\(the MPI library .* provides only MPI_THREAD_SINGLE.*\\) and finalized MPI; MPI cannot be initialized again after MPI_Finalize: start a new process$`));
  }
});

// A launcher whose MPI is not the one emae was built with (another installation's mpirun, srun
// without PMI) starts processes that MPI sees as separate one-rank worlds: each would train alone
// as rank 0, all writing to one folder. Launcher variables without a launcher reproduce that view.
(build.mpi ? test.serial : test.skip)('a launcher that MPI does not see is refused, naming both views', async (t) => {
  const dir = tmp();
  const script = path.join(dir, 'mismatch.mts');
  writeFileSync(script, `
    import { initDistributed } from ${JSON.stringify(path.join(root, 'lib', 'index.js'))};
    try { await initDistributed(); console.log('JOINED'); } catch (e) { console.log('ERROR ' + (e as Error).message); }
  `);
  for (const vars of [{ OMPI_COMM_WORLD_SIZE: '2', OMPI_COMM_WORLD_RANK: '1' }, { SLURM_STEP_NUM_TASKS: '3', SLURM_PROCID: '0' }]) {
    const r = spawnSync(process.execPath, ['--import=tsx', script], { cwd: root, env: { ...mpiEnv(), ...vars }, encoding: 'utf8', timeout: 60_000 });
    t.is(r.status, 0, r.stderr);
    const [size, rank] = Object.values(vars);
    t.regex(r.stdout, new RegExp(`^ERROR initDistributed: the launcher \\((open-mpi|slurm)\\) started this process as rank ${rank} of ${size}, ` +
      'but MPI \\(.+\\) sees rank 0 of 1: .*another MPI installation'), r.stdout + r.stderr);
  }
});

// The CLI: `emae info`; a tiny `emae pretrain` on generated images writes the log and
// checkpoints, `--resume` continues from them, SIGINT writes a checkpoint and exits 130.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const cli = (...args: string[]) => spawnSync(process.execPath, ['--import=tsx', 'lib/cli.ts', ...args], { encoding: 'utf8' });
const dir = mkdtempSync(path.join(tmpdir(), 'emae-cli-'));
const config = path.join(dir, 'tiny.json');
writeFileSync(config, JSON.stringify({ patchSize: 4, embedDim: 32, depth: 1, numHeads: 2, decoderEmbedDim: 32, decoderDepth: 1, decoderNumHeads: 2, mlpRatio: 2 }));
const common = ['pretrain', '--config', config, '--data', 'synthetic:64', '--image-size', '16', '--batch', '8', '--blr', '1e-2', '--device', 'cpu', '--threads', '1'];

test('emae info prints the version, backends and devices', (t) => {
  const r = cli('info');
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /^emae \d+\.\d+\.\d+/);
  t.regex(r.stdout, /backends built: cpu/);
  t.regex(r.stdout, /CUDA device/);
  const j = JSON.parse(cli('info', '--json').stdout);
  t.true(j.backends.includes('cpu'));
  t.is(typeof j.cpuThreads, 'number');
  t.true(['avx512', 'avx2', 'generic'].includes(j.cpuGemmKernel), String(j.cpuGemmKernel));
  t.regex(j.cpuBf16, /^(available \((amx-bf16|avx512-bf16)\)|unavailable: .+)$/, 'names the bf16 kernel or why there is none');
  t.true(r.stdout.includes(`cpuMatmul 'bf16': ${j.cpuBf16}`));
});

test("the package's bin is an executable script (npx emae runs dist/cli.js itself)", (t) => {
  const { bin } = JSON.parse(readFileSync('package.json', 'utf8')) as { bin: Record<string, string> };
  t.deepEqual(Object.keys(bin), ['emae']);
  t.true((statSync(bin.emae).mode & 0o111) === 0o111, `${bin.emae} is not executable: npm test builds it with scripts/build-ts.mjs`);
  t.true(readFileSync(bin.emae, 'utf8').startsWith('#!/usr/bin/env node\n'));
  const r = spawnSync(bin.emae, ['--version'], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /^\d+\.\d+\.\d+/);
});

test('an unknown command is an error', (t) => {
  const r = cli('no-such-command');
  t.not(r.status, 0);
  t.regex(r.stderr, /unknown command/);
});

test('pretrain writes log and checkpoints; --resume continues', (t) => {
  const out = path.join(dir, 'run');
  const first = cli(...common, '--steps', '6', '--checkpoint-every', '3', '--out', out);
  t.is(first.status, 0, first.stderr);
  t.regex(first.stdout, /"imageSize": 16/, 'prints the resolved configuration');
  t.true(existsSync(path.join(out, 'ckpt-3.safetensors')) && existsSync(path.join(out, 'ckpt-6.safetensors')));
  t.true(existsSync(path.join(out, 'curves.png')) && existsSync(path.join(out, 'curves.svg')), 'loss curves next to the log');
  t.is(readFileSync(path.join(out, 'log.jsonl'), 'utf8').trim().split('\n').length, 6);
  const second = cli(...common, '--steps', '9', '--checkpoint-every', '3', '--out', out, '--resume');
  t.is(second.status, 0, second.stderr);
  t.regex(second.stdout, /resumed at step 6/);
  const log = readFileSync(path.join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.deepEqual(log.map((l) => l.step), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  t.true(existsSync(path.join(out, 'ckpt-9.safetensors')));
});

test('pretrain: bad options are clear errors', (t) => {
  const r = cli(...common, '--data', 'mnist:/nope', '--steps', '1', '--out', path.join(dir, 'bad'));
  t.is(r.status, 1);
  t.regex(r.stderr, /--data: expected synthetic/);
  const s = cli(...common, '--steps', 'many');
  t.not(s.status, 0);
  t.regex(s.stderr, /--steps expects a number/);
  for (const [flag, value] of [['--workers', '1.5'], ['--workers', '-1'], ['--prefetch', 'two']]) {
    const w = cli(...common, '--steps', '1', flag, value);
    t.not(w.status, 0);
    t.regex(w.stderr, new RegExp(`${flag} expects a non-negative integer, got '${value}'`));
  }
});

test('SIGINT writes a checkpoint and exits 130', async (t) => {
  const out = path.join(dir, 'interrupted');
  const child = spawn(process.execPath, ['--import=tsx', 'lib/cli.ts', ...common, '--steps', '100000', '--checkpoint-every', '100000', '--out', out, '--no-progress']);
  let stdout = '';
  child.stdout.on('data', (d) => {
    stdout += d;
    if (/step 10\//.test(stdout) && !child.killed) child.kill('SIGINT');
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));  // 'close': stdout fully read
  t.is(code, 130, stdout);
  t.regex(stdout, /SIGINT: stopped at step \d+; checkpoint written/);
  const step = Number(/stopped at step (\d+)/.exec(stdout)![1]);
  t.true(existsSync(path.join(out, `ckpt-${step}.safetensors`)));
});

// Spawns a pretrain run of a model whose checkpoint (~150 MB) takes a while to write; once it has
// logged step 10, sends the first of `signals`, and each next one as soon as the run has answered
// the previous (so none merge with a pending one, and all land before the checkpoint is done).
async function interrupt(out: string, signals: NodeJS.Signals[], extra: string[] = [], firstWhen?: () => boolean) {
  const big = path.join(dir, 'big.json');
  writeFileSync(big, JSON.stringify({ patchSize: 4, embedDim: 384, depth: 6, numHeads: 6, decoderEmbedDim: 256, decoderDepth: 2, decoderNumHeads: 8 }));
  const child = spawn(process.execPath, ['--import=tsx', 'lib/cli.ts', ...common, '--config', big, '--steps', '100000', '--out', out,
    '--no-progress', ...extra]);
  let stdout = '', stderr = '', sent = 0;
  const send = () => { if (sent < signals.length && child.exitCode === null) child.kill(signals[sent++]); };
  child.stderr.on('data', (d) => {
    stderr += d;
    if ((stderr.match(/^SIG(INT|TERM): /gm) ?? []).length === sent) send();
  });
  child.stdout.on('data', (d) => {
    stdout += d;
    if (!firstWhen && sent === 0 && /step 10\//.test(stdout)) send();
  });
  const poll = firstWhen ? setInterval(() => { if (sent === 0 && firstWhen()) send(); }, 20) : undefined;
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));  // 'close': stdout fully read
  clearInterval(poll);
  return { code, stdout, stderr, config: big };
}

test('a second SIGINT or SIGTERM does not cut the checkpoint short', async (t) => {
  for (const [signal, exit] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    const out = path.join(dir, `twice-${signal}`);
    const r = await interrupt(out, [signal, signal], ['--checkpoint-every', '100000']);
    t.log(r.stderr.trim());
    t.is(r.code, exit, r.stderr);
    t.regex(r.stderr, new RegExp(`${signal}: .*please wait`));
    const step = Number(/stopped at step (\d+)/.exec(r.stdout)![1]);
    const { EMAE, loadCheckpoint } = await import('../lib/index.js');
    const model = await EMAE.create({ ...JSON.parse(readFileSync(r.config, 'utf8')), imageSize: 16, device: 'cpu', threads: 1 });
    t.is((await loadCheckpoint(path.join(out, `ckpt-${step}.safetensors`), model)).step, step);
    await model.dispose();
  }
});

test('a third signal quits at once; the previous checkpoint still loads and --resume continues', async (t) => {
  const out = path.join(dir, 'thrice');
  // 48-pixel images make a step take seconds, so all three signals land inside step 2
  const slow = ['--image-size', '48', '--data', 'synthetic:32', '--batch', '16', '--checkpoint-every', '1'];
  const r = await interrupt(out, ['SIGINT', 'SIGINT', 'SIGINT'], slow, () => existsSync(path.join(out, 'ckpt-1.safetensors')));
  t.log(r.stderr.trim());
  t.is(r.code, 130, r.stderr);
  t.regex(r.stderr, /quitting without a new checkpoint/);
  const done = Number(/quitting without a new checkpoint at step (\d+)/.exec(r.stderr)![1]);
  const resumed = cli(...common, '--config', r.config, ...slow, '--steps', String(done + 1), '--out', out, '--resume');
  t.is(resumed.status, 0, resumed.stderr);
  const from = Number(/resumed at step (\d+)/.exec(resumed.stdout)![1]);
  t.true(from >= 1 && from <= done && from >= done - 1, `resumed from the newest checkpoint (${from}) of a run that did ${done} steps`);
  const steps = readFileSync(path.join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step);
  t.deepEqual(steps, Array.from({ length: done + 1 }, (_, i) => i + 1), 'the log holds each step once');
  t.false(readdirSync(out).some((f) => f.includes('.tmp-')), 'no temporary file left');
});

test('pretrain refuses a non-empty --out; --force says what it deletes', (t) => {
  const out = path.join(dir, 'twice-run');
  t.is(cli(...common, '--steps', '4', '--checkpoint-every', '2', '--out', out).status, 0);
  const before = readdirSync(out).sort();
  const again = cli(...common, '--steps', '2', '--checkpoint-every', '2', '--out', out);
  t.is(again.status, 1);
  t.regex(again.stderr, /the output folder .*twice-run is not empty .*--resume.*--force/);
  t.deepEqual(readdirSync(out).sort(), before, 'nothing deleted or added');
  const forced = cli(...common, '--steps', '2', '--checkpoint-every', '2', '--out', out, '--force');
  t.is(forced.status, 0, forced.stderr);
  t.regex(forced.stdout, /--force: deleted in .*twice-run: ckpt-2\.safetensors, ckpt-4\.safetensors, curves\.png, curves\.svg, log\.jsonl/);
  t.deepEqual(readdirSync(out).filter((f) => f.startsWith('ckpt-')), ['ckpt-2.safetensors']);
  t.regex(cli(...common, '--steps', '2', '--out', out, '--force', '--resume').stderr, /--force starts a new run and --resume continues one/);
  writeFileSync(path.join(dir, 'a-file'), '');
  t.regex(cli(...common, '--steps', '2', '--out', path.join(dir, 'a-file')).stderr, /cannot use .*a-file as the output folder: a file of that name exists/);
});

test('pretrain on an image folder', async (t) => {
  const { default: sharp } = await import('sharp');
  const images = path.join(dir, 'images');
  for (const [i, cls] of ['a', 'a', 'b', 'b'].entries()) {
    const { mkdirSync } = await import('node:fs');
    mkdirSync(path.join(images, cls), { recursive: true });
    await sharp({ create: { width: 24 + i, height: 20, channels: 3, background: { r: 60 * i, g: 100, b: 200 - 40 * i } } })
      .png().toFile(path.join(images, cls, `${i}.png`));
  }
  const out = path.join(dir, 'folder-run');
  const r = cli('pretrain', '--config', config, '--data', `folder:${images}`, '--image-size', '16', '--batch', '2', '--steps', '2',
    '--device', 'cpu', '--threads', '1', '--out', out);
  t.is(r.status, 0, r.stderr);
  t.true(existsSync(path.join(out, 'ckpt-2.safetensors')));
  // decode workers and a deeper prefetch: the same losses, bit for bit (CPU, one thread)
  const losses = (run: string) => readFileSync(path.join(run, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).loss);
  const runs = [['0', '0'], ['2', '3']].map(([workers, prefetch]) => {
    const o = path.join(dir, `folder-run-w${workers}`);
    const x = cli('pretrain', '--config', config, '--data', `folder:${images}`, '--image-size', '16', '--batch', '2', '--steps', '3',
      '--device', 'cpu', '--threads', '1', '--workers', workers, '--prefetch', prefetch, '--out', o);
    t.is(x.status, 0, x.stderr);
    const printed = JSON.parse(x.stdout.slice(0, x.stdout.indexOf('\n}') + 2));
    t.is(printed.data.workers, Number(workers));
    t.is(printed.trainer.prefetch, Number(prefetch));
    return losses(o);
  });
  t.is(runs[0].length, 3);
  t.deepEqual(runs[1], runs[0]);
});

test('probe on an image folder: --limit takes images of every class, and they are reported', async (t) => {
  const { default: sharp } = await import('sharp');
  const { mkdirSync } = await import('node:fs');
  const images = path.join(dir, 'probe-images');
  for (const cls of ['a', 'b', 'c'])
    for (let i = 0; i < 3; i++) {
      mkdirSync(path.join(images, cls), { recursive: true });
      await sharp({ create: { width: 20 + i, height: 18, channels: 3, background: { r: cls === 'a' ? 220 : 20, g: cls === 'b' ? 220 : 20, b: cls === 'c' ? 220 : 20 } } })
        .png().toFile(path.join(images, cls, `${i}.png`));
    }
  const probe = cli('probe', '--config', config, '--image-size', '16', '--device', 'cpu', '--threads', '1',
    '--data', `folder:${images}`, '--test-data', `folder:${images}`, '--limit', '3', '--epochs', '2');
  t.is(probe.status, 0, probe.stderr);
  const p = JSON.parse(probe.stdout.trim().split('\n').pop()!);
  t.like(p, { train: 3, test: 3, trainClasses: 3, testClasses: 3 }, 'one image of each class, not the first class\'s three');
});

test('reconstruct writes PNG grids of the expected size; probe and consistency print JSON', async (t) => {
  const out = path.join(dir, 'eval-run');
  const trained = cli(...common, '--steps', '3', '--out', out);
  t.is(trained.status, 0, trained.stderr);
  const model = ['--config', config, '--image-size', '16', '--device', 'cpu', '--threads', '1', '--weights', path.join(out, 'ckpt-3.safetensors')];
  const rec = cli('reconstruct', ...model, '--data', 'synthetic:8', '--count', '2', '--out', path.join(out, 'rec'));
  t.is(rec.status, 0, rec.stderr);
  const { default: sharp } = await import('sharp');
  const meta = await sharp(path.join(out, 'rec', 'reconstruction-1.png')).metadata();
  t.is(meta.height, 8 * 16, 'enlarged 8× by default, so a 16-pixel image is 128 pixels high');
  t.is(meta.width, 8 * (10 * 16 + 9 * 2), 'original | 4 masked | 4 reconstructions | assembled, 2-pixel gaps');
  const small = cli('reconstruct', ...model, '--data', 'synthetic:8', '--count', '1', '--scale', '1', '--out', path.join(out, 'rec1'));
  t.is(small.status, 0, small.stderr);
  t.regex(small.stdout, /wrote 1 grids \(178×16, 1× enlarged\)/);
  const px1 = await sharp(path.join(out, 'rec1', 'reconstruction-0.png')).raw().toBuffer();
  const px8 = await sharp(path.join(out, 'rec', 'reconstruction-0.png')).raw().toBuffer();
  t.deepEqual([...px8.subarray((8 * 3 * 8 * 178 + 8 * 5) * 3, (8 * 3 * 8 * 178 + 8 * 5) * 3 + 3)], [...px1.subarray((3 * 178 + 5) * 3, (3 * 178 + 5) * 3 + 3)],
    'nearest-neighbour enlargement: pixel (5, 3) becomes an 8×8 block');
  t.regex(cli('reconstruct', ...model, '--scale', '0').stderr, /--scale expects an integer from 1 to 64, got 0/);
  writeFileSync(path.join(out, 'not-a-dir'), '');
  t.regex(cli('reconstruct', ...model, '--data', 'synthetic:8', '--count', '1', '--out', path.join(out, 'not-a-dir')).stderr,
    /cannot use .*not-a-dir as the output folder: a file of that name exists and is not a folder/);
  const probe = cli('probe', ...model, '--data', 'synthetic:64', '--test-data', 'synthetic:32', '--epochs', '3');
  t.is(probe.status, 0, probe.stderr);
  const p = JSON.parse(probe.stdout.trim().split('\n').pop()!);
  t.regex(probe.stderr, /probe: encoding the train images: 64\/64/, 'progress on stderr');
  t.regex(probe.stderr, /probe: training the linear classifier \(epochs\): 3\/3/);
  t.is(p.train, 64);
  t.is(p.test, 32);
  t.true(p.linearProbeTop1 >= 0 && p.linearProbeTop1 <= 1 && p.knnTop1 >= 0 && p.knnTop1 <= 1);
  const cons = cli('consistency', ...model, '--data', 'synthetic:8', '--count', '4', '--draws', '2');
  t.is(cons.status, 0, cons.stderr);
  t.true(JSON.parse(cons.stdout.trim().split('\n').pop()!).consistency > 0);
  t.regex(cons.stdout, /^consistency [\d.e+-]+: over 4 images and 2 mask draws each, the mean squared difference/m, 'a sentence says what it means');
});

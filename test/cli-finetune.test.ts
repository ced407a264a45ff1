// The fine-tuning CLI: `emae finetune` from a pretraining checkpoint prints the test top-1 per
// epoch, writes its log, checkpoints and classifier.safetensors, and --resume continues it;
// `emae evaluate` scores the result; bad input is a one-line error and exit 1. The same from
// image folders (folder:<dir>, class sub-folders), with --workers and --limit, unreadable files
// reported as pretraining reports them, and the folders' classes checked.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';

const cli = (...args: string[]) => spawnSync(process.execPath, ['--import=tsx', 'lib/cli.ts', ...args], { encoding: 'utf8' });
const dir = mkdtempSync(path.join(tmpdir(), 'emae-cli-ft-'));
const config = path.join(dir, 'tiny.json');
writeFileSync(config, JSON.stringify({ patchSize: 4, embedDim: 32, depth: 2, numHeads: 2, decoderEmbedDim: 32, decoderDepth: 1, decoderNumHeads: 2, mlpRatio: 2 }));
const pretrainOut = path.join(dir, 'pretrain');
const pretrained = path.join(pretrainOut, 'ckpt-4.safetensors');
const data = ['--data', 'synthetic:64', '--test-data', 'synthetic:32'];
const small = ['--batch', '8', '--device', 'cpu', '--threads', '1', '--no-progress'];

// image folders: <root>/<class>/<i>.png, each class a colour (with a little noise per image)
const COLOURS: Record<string, [number, number, number]> = { blue: [30, 40, 220], green: [40, 200, 50], red: [220, 40, 30], yellow: [220, 210, 40] };
async function classFolder(name: string, classes: string[], perClass: number): Promise<string> {
  const root = path.join(dir, name);
  for (const [c, cls] of classes.entries()) {
    mkdirSync(path.join(root, cls), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const px = Buffer.from(Array.from({ length: 24 * 24 * 3 }, (_, k) => Math.min(255, Math.max(0, COLOURS[cls][k % 3] + ((k * 37 + i * 11 + c) % 41) - 20))));
      await sharp(px, { raw: { width: 24, height: 24, channels: 3 } }).png().toFile(path.join(root, cls, `${i}.png`));
    }
  }
  return root;
}
const folders = { train: '', test: '', other: '', two: '', flat: '' };

// one pretraining run for every test below (they run serially), and the folders
test.before(async () => {
  folders.train = await classFolder('train', ['blue', 'green', 'red'], 6);
  writeFileSync(path.join(folders.train, 'green', 'broken.jpg'), 'not a JPEG');
  folders.test = await classFolder('test', ['blue', 'green', 'red'], 3);
  folders.other = await classFolder('other', ['blue', 'green', 'yellow'], 2);
  folders.two = await classFolder('two', ['blue', 'green'], 2);
  folders.flat = path.join(dir, 'flat');
  mkdirSync(folders.flat);
  writeFileSync(path.join(folders.flat, 'a.png'), readFileSync(path.join(folders.test, 'red', '0.png')));
  const r = cli('pretrain', '--config', config, '--data', 'synthetic:64', '--image-size', '16', '--batch', '8', '--steps', '4',
    '--checkpoint-every', '4', '--device', 'cpu', '--threads', '1', '--out', pretrainOut);
  if (r.status !== 0) throw new Error(`pretraining for the fine-tuning tests failed: ${r.stderr}`);
});

test.serial('finetune prints the test top-1 per epoch, writes log, checkpoints and weights; --resume continues; evaluate agrees', (t) => {
  const out = path.join(dir, 'ft');
  const r = cli('finetune', '--weights', pretrained, ...data, ...small, '--epochs', '2', '--out', out);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /"numClasses": 2/, 'classes from the labels');
  t.regex(r.stdout, /epoch 1\/2: train loss \d+\.\d+, test top-1 \d+\.\d+%/);
  t.regex(r.stdout, /epoch 2\/2: train loss/);
  t.true(existsSync(path.join(out, 'classifier.safetensors')));
  t.true(existsSync(path.join(out, 'ckpt-16.safetensors')), 'a checkpoint at the end of epoch 2 (8 steps an epoch)');
  const final = JSON.parse(r.stdout.trim().split('\n').pop()!) as { steps: number; testTop1: number };
  t.is(final.steps, 16);
  const log = readFileSync(path.join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.deepEqual(log.filter((l) => l.kind !== 'epoch').map((l) => l.step), Array.from({ length: 16 }, (_, i) => i + 1));
  t.is(log.filter((l) => l.kind === 'epoch').length, 2);

  const more = cli('finetune', '--weights', pretrained, ...data, ...small, '--epochs', '3', '--out', out, '--resume');
  t.is(more.status, 0, more.stderr);
  t.regex(more.stdout, /resumed at step 16/);
  t.regex(more.stdout, /epoch 3\/3/);
  const steps = readFileSync(path.join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((l) => l.kind !== 'epoch').map((l) => l.step);
  t.deepEqual(steps, Array.from({ length: 24 }, (_, i) => i + 1), 'each step logged once');

  const e = cli('evaluate', '--weights', path.join(out, 'classifier.safetensors'), '--data', 'synthetic:32', '--device', 'cpu', '--threads', '1');
  t.is(e.status, 0, e.stderr);
  const scored = JSON.parse(e.stdout.trim()) as { top1: number; count: number };
  t.is(scored.count, 32);
  const fromCkpt = cli('evaluate', '--weights', path.join(out, 'ckpt-24.safetensors'), '--data', 'synthetic:32', '--device', 'cpu', '--threads', '1');
  t.is(fromCkpt.status, 0, fromCkpt.stderr);
  t.is(JSON.parse(fromCkpt.stdout.trim()).top1, scored.top1, 'the last checkpoint holds the same classifier');
});

test.serial('finetune from scratch with --config', (t) => {
  const r = cli('finetune', '--config', config, ...data, ...small, '--epochs', '1', '--out', path.join(dir, 'scratch'));
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /"weights": null/);
});

test.serial('finetune --aa (timm\'s RandAugment string) and --reprob/--remode/--recount reach the fine-tuner; bad values are refused', async (t) => {
  const out = path.join(dir, 'aug');
  const r = cli('finetune', '--config', config, ...data, ...small, '--epochs', '1', '--out', out,
    '--aa', 'rand-m9-mstd0.5-inc1', '--reprob', '0.25', '--remode', 'rand', '--recount', '2');
  t.is(r.status, 0, r.stderr);
  const { readSafetensorsMetadata } = await import('../lib/safetensors.js');
  const options = JSON.parse((await readSafetensorsMetadata(path.join(out, 'ckpt-8.safetensors'))).finetune_options);
  t.deepEqual(options.randAugment, { ops: 2, magnitude: 9, magnitudeStd: 0.5, increasing: true });
  t.deepEqual(options.randomErasing, { probability: 0.25, mode: 'rand', count: 2 });
  const plain = cli('finetune', '--config', config, ...data, ...small, '--epochs', '1', '--out', path.join(dir, 'aug-off'));
  t.is(plain.status, 0, plain.stderr);
  const off = JSON.parse((await readSafetensorsMetadata(path.join(dir, 'aug-off', 'ckpt-8.safetensors'))).finetune_options);
  t.is(off.randAugment, false, 'off by default');
  t.is(off.randomErasing, undefined, 'off by default');
  const bad = (args: string[], pattern: RegExp) => {
    const e = cli('finetune', '--config', config, ...data, ...small, '--epochs', '1', '--out', path.join(dir, 'aug-bad'), ...args);
    t.is(e.status, 1, `${args.join(' ')}\n${e.stdout}`);
    t.regex(e.stderr, pattern, args.join(' '));
  };
  bad(['--aa', 'rand-m9-x3'], /RandAugment config 'rand-m9-x3': unknown section 'x3'/);
  bad(['--aa', 'rand-m9.5'], /'m' takes a non-negative integer/);
  bad(['--aa', 'original-mstd0.5'], /'original' is not implemented/);
  bad(['--reprob', '1.5'], /--reprob expects a probability in \[0, 1\]/);
  bad(['--recount', '0'], /--recount expects a positive integer/);
  bad(['--remode', 'noise'], /--remode/);
});

test.serial('finetune and evaluate: bad input is a clear error', (t) => {
  const bad = (args: string[], pattern: RegExp) => {
    const r = cli(...args);
    t.is(r.status, 1, `${args.join(' ')}\n${r.stdout}`);
    t.regex(r.stderr, pattern, args.join(' '));
  };
  const out = ['--out', path.join(dir, 'bad')];
  bad(['finetune', '--weights', pretrained, '--data', 'folder:/nope', ...small, ...out], /no such file or directory.*\/nope/);
  bad(['finetune', ...data, ...small, ...out], /give --weights .* or --preset\/--config/);
  bad(['finetune', '--weights', pretrained, '--preset', 'vit-tiny', ...data, ...small, ...out], /leave out --preset/);
  bad(['finetune', '--weights', path.join(dir, 'missing.safetensors'), ...data, ...small, ...out], /missing\.safetensors/);
  bad(['finetune', '--weights', pretrained, ...data, ...small, '--force', '--resume', ...out], /--force starts a new run/);
  bad(['finetune', '--weights', pretrained, ...data, ...small, '--layer-decay', '1.5', ...out], /layerDecay/);
  bad(['finetune', '--weights', pretrained, ...data, ...small, '--batch', '7', ...out], /even batch size with mixup/);
  bad(['finetune', '--weights', pretrained, ...data, ...small, '--num-classes', '1', ...out], /numClasses/);
  bad(['evaluate', '--weights', pretrained, '--data', 'synthetic:32'], /not an emae classifier: it records no classifier config/);
  const corrupt = path.join(dir, 'corrupt.safetensors');
  writeFileSync(corrupt, readFileSync(path.join(dir, 'ft', 'classifier.safetensors')).subarray(0, 500));
  bad(['evaluate', '--weights', corrupt, '--data', 'synthetic:32'], /corrupt\.safetensors/);
});

test.serial('finetune and evaluate on image folders: class sub-folders, --workers, --limit; unreadable files reported as in pretraining', (t) => {
  const out = path.join(dir, 'ft-folder');
  const folderData = ['--data', `folder:${folders.train}`, '--test-data', `folder:${folders.test}`];
  const r = cli('finetune', '--weights', pretrained, ...folderData, ...small, '--batch', '6', '--epochs', '2', '--workers', '0', '--out', out);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /"numClasses": 3/, 'classes from the sub-folders');
  t.regex(r.stdout, /"count": 18,\s+"test": 9,\s+"classes": 3,\s+"workers": 0/);
  t.regex(r.stdout, /epoch 2\/2: train loss \d+\.\d+, test top-1 \d+\.\d+%/);
  t.is(r.stderr.split('broken.jpg').length - 1, 1, r.stderr);
  t.regex(r.stderr, /emae: skipping .*broken\.jpg: Input file contains unsupported image format/);
  t.regex(r.stderr, /train: 18 images, 1 unreadable file left out/);
  const final = JSON.parse(r.stdout.trim().split('\n').pop()!) as { steps: number; testTop1: number };
  t.is(final.steps, 6, '18 images, batch 6, 2 epochs');

  const more = cli('finetune', '--weights', pretrained, ...folderData, ...small, '--batch', '6', '--epochs', '3', '--workers', '2', '--out', out, '--resume');
  t.is(more.status, 0, more.stderr);
  t.regex(more.stdout, /resumed at step 6/);
  t.regex(more.stdout, /epoch 3\/3/);
  const top1 = JSON.parse(more.stdout.trim().split('\n').pop()!).testTop1 as number;

  // evaluate scores the test folder as the fine-tuning did, with or without decode workers
  const weights = path.join(out, 'classifier.safetensors');
  for (const workers of ['0', '2']) {
    const e = cli('evaluate', '--weights', weights, '--data', `folder:${folders.test}`, '--batch', '4', '--workers', workers, '--device', 'cpu', '--threads', '1');
    t.is(e.status, 0, e.stderr);
    t.deepEqual(JSON.parse(e.stdout.trim()), { weights, data: `folder:${folders.test}`, count: 9, top1 });
    t.regex(e.stderr, /evaluate: decoding and scoring the images of .*test: 9\/9/);
  }
  // --limit: files spread over the classes
  const limited = cli('evaluate', '--weights', weights, '--data', `folder:${folders.test}`, '--limit', '4', '--device', 'cpu', '--threads', '1');
  t.is(limited.status, 0, limited.stderr);
  t.is(JSON.parse(limited.stdout.trim()).count, 4);
});

test.serial('image folders: bad input is a clear error', (t) => {
  const bad = (args: string[], pattern: RegExp) => {
    const r = cli(...args);
    t.is(r.status, 1, `${args.join(' ')}\n${r.stdout}`);
    t.regex(r.stderr, pattern, args.join(' '));
    t.is(r.stderr.trim().split('\n').filter((l) => !l.includes('skipping') && !l.includes('unreadable')).length, 1, r.stderr);
  };
  const out = ['--out', path.join(dir, 'bad-folder')];
  const train = ['--weights', pretrained, '--data', `folder:${folders.train}`, ...small, '--batch', '6', '--workers', '0'];
  bad(['finetune', ...train, '--test-data', `folder:${folders.other}`, ...out],
    /^emae: testData: the classes of the test folder .*other differ from those of the training folder .*train: only in the training folder: red; only in the test folder: yellow$/m);
  bad(['finetune', ...train, '--num-classes', '5', ...out], /^emae: --num-classes 5 disagrees with the 3 class sub-folder\(s\) of .*train \(leave it out to take theirs\)$/m);
  bad(['finetune', ...train, '--pad-to', '32', ...out], /--pad-to pads IDX\/CIFAR images/);
  bad(['finetune', '--weights', pretrained, '--data', `folder:${folders.flat}`, ...small, ...out],
    /^emae: data: 1 of the 1 images of .*flat are not in a class sub-folder \(.*a\.png\) and it has no class sub-folders; fine-tuning reads <root>\/<class>\/<image>/m);
  bad(['finetune', ...train, '--limit', '0', ...out], /--limit expects a positive integer, got 0/);
  bad(['finetune', ...train, '--workers', 'x', ...out], /--workers expects a non-negative integer, got 'x'/);
  const weights = path.join(dir, 'ft-folder', 'classifier.safetensors');
  bad(['evaluate', '--weights', weights, '--data', `folder:${folders.two}`, '--device', 'cpu', '--threads', '1'],
    /^emae: data: the folder .*two has 2 class sub-folder\(s\) \(blue, green\) but the classifier has 3 classes$/m);
});

// The fine-tuning CLI: `emae finetune` from a pretraining checkpoint prints the test top-1 per
// epoch, writes its log, checkpoints and classifier.safetensors, and --resume continues it;
// `emae evaluate` scores the result; bad input is a one-line error and exit 1.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const cli = (...args: string[]) => spawnSync(process.execPath, ['--import=tsx', 'lib/cli.ts', ...args], { encoding: 'utf8' });
const dir = mkdtempSync(path.join(tmpdir(), 'emae-cli-ft-'));
const config = path.join(dir, 'tiny.json');
writeFileSync(config, JSON.stringify({ patchSize: 4, embedDim: 32, depth: 2, numHeads: 2, decoderEmbedDim: 32, decoderDepth: 1, decoderNumHeads: 2, mlpRatio: 2 }));
const pretrainOut = path.join(dir, 'pretrain');
const pretrained = path.join(pretrainOut, 'ckpt-4.safetensors');
const data = ['--data', 'synthetic:64', '--test-data', 'synthetic:32'];
const small = ['--batch', '8', '--device', 'cpu', '--threads', '1', '--no-progress'];

// one pretraining run for every test below (they run serially)
test.before(() => {
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

test.serial('finetune and evaluate: bad input is a clear error', (t) => {
  const bad = (args: string[], pattern: RegExp) => {
    const r = cli(...args);
    t.is(r.status, 1, `${args.join(' ')}\n${r.stdout}`);
    t.regex(r.stderr, pattern, args.join(' '));
  };
  const out = ['--out', path.join(dir, 'bad')];
  bad(['finetune', '--weights', pretrained, '--data', 'folder:/nope', ...small, ...out], /image folders are not supported/);
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

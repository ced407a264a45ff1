// The run folder shared by the Trainer and the FineTuner (lib/run-folder.ts), without a model:
// claiming a folder (missing, empty, refused, overwritten), continuing a resumed run in it, and
// finding and pruning the checkpoints of one run among another run's.
import test from 'ava';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { LOG_FILE, OUT_NOT_EMPTY, newestRunCheckpoint, prepareRunFolder, pruneRunCheckpoints } from '../lib/run-folder.js';
import { writeSafetensors } from '../lib/safetensors.js';

const tmp = () => mkdtempSync(path.join(tmpdir(), 'emae-run-folder-'));
const files = (dir: string) => readdirSync(dir).sort();
const logOf = (steps: number[]) => steps.map((step) => JSON.stringify({ step, loss: step / 10 }) + '\n').join('');
const logSteps = (dir: string) => readFileSync(path.join(dir, LOG_FILE), 'utf8').trim().split('\n').map((l) => JSON.parse(l).step);

// A checkpoint as far as the run folder reads one: its name and the run id in its trainer metadata.
function fakeCheckpoint(dir: string, step: number, runId?: string): string {
  const file = path.join(dir, `ckpt-${step}.safetensors`);
  const trainer = JSON.stringify({ step, ...(runId !== undefined ? { runId } : {}) });
  writeFileSync(file, writeSafetensors({ w: new Float32Array([step]) }, { trainer }));
  return file;
}

test('a missing folder is created, an empty one taken, and neither reports anything', async (t) => {
  const missing = path.join(tmp(), 'a', 'b');
  t.deepEqual(await prepareRunFolder(missing, { overwrite: false, step: 0 }), { removed: [], logLinesDropped: 0 });
  t.deepEqual(files(missing), []);
  const empty = tmp();
  t.deepEqual(await prepareRunFolder(empty, { overwrite: false, step: 0 }), { removed: [], logLinesDropped: 0 });
  t.deepEqual(files(empty), []);
});

test('a new run refuses a folder that holds files, naming them, and deletes nothing', async (t) => {
  const dir = tmp();
  fakeCheckpoint(dir, 2, 'a');
  writeFileSync(path.join(dir, LOG_FILE), logOf([1, 2, 3]));
  writeFileSync(path.join(dir, 'notes.txt'), 'mine');
  const before = files(dir);
  const err = await t.throwsAsync(prepareRunFolder(dir, { overwrite: false, step: 0 }),
    { message: /^the output folder .* is not empty \(ckpt-2\.safetensors, log\.jsonl, notes\.txt\): resume that run .*--force/ });
  t.is((err as NodeJS.ErrnoException).code, OUT_NOT_EMPTY);
  t.deepEqual(files(dir), before);
  t.deepEqual(logSteps(dir), [1, 2, 3]);
  // a run resumed from a checkpoint in another folder is a new run here
  const elsewhere = fakeCheckpoint(tmp(), 2, 'a');
  await t.throwsAsync(prepareRunFolder(dir, { overwrite: false, resumedFrom: elsewhere, step: 2 }), { code: OUT_NOT_EMPTY });
  t.deepEqual(files(dir), before);
});

test('overwrite deletes only the run files (and their interrupted writes)', async (t) => {
  const dir = tmp();
  fakeCheckpoint(dir, 2, 'a');
  fakeCheckpoint(dir, 4, 'b');
  writeFileSync(path.join(dir, LOG_FILE), logOf([1, 2]));
  writeFileSync(path.join(dir, 'curves.svg'), '<svg/>');
  writeFileSync(path.join(dir, 'ckpt-6.safetensors.tmp-41-9af0'), 'half');
  writeFileSync(path.join(dir, 'notes.txt'), 'mine');
  writeFileSync(path.join(dir, 'ckpt-best.safetensors'), 'not a step checkpoint');
  mkdirSync(path.join(dir, 'images'));
  const report = await prepareRunFolder(dir, { overwrite: true, step: 0 });
  t.deepEqual(report, { removed: ['ckpt-2.safetensors', 'ckpt-4.safetensors', 'ckpt-6.safetensors.tmp-41-9af0', 'curves.svg', 'log.jsonl'],
    logLinesDropped: 0 });
  t.deepEqual(files(dir), ['ckpt-best.safetensors', 'images', 'notes.txt']);
});

test('a run resumed in its checkpoint\'s folder continues there: log cut back, interrupted writes removed', async (t) => {
  const dir = tmp();
  const resumed = fakeCheckpoint(dir, 4, 'a');
  fakeCheckpoint(dir, 2, 'a');
  // steps 5 and 6 were logged after the checkpoint, then the process died mid-line and mid-write
  writeFileSync(path.join(dir, LOG_FILE), logOf([1, 2, 3, 4, 5, 6]) + '{"step": 7, "lo');
  writeFileSync(path.join(dir, 'ckpt-6.safetensors.tmp-41-9af0'), 'half');
  writeFileSync(path.join(dir, 'log.jsonl.tmp-41-77'), 'half');
  writeFileSync(path.join(dir, 'notes.txt'), 'mine');
  // the checkpoint named by a relative path is still this folder's
  const report = await prepareRunFolder(dir, { overwrite: false, resumedFrom: path.relative(process.cwd(), resumed), step: 4 });
  t.deepEqual(report, { removed: ['ckpt-6.safetensors.tmp-41-9af0', 'log.jsonl.tmp-41-77'], logLinesDropped: 3 });
  t.deepEqual(logSteps(dir), [1, 2, 3, 4]);
  t.deepEqual(files(dir), ['ckpt-2.safetensors', 'ckpt-4.safetensors', 'log.jsonl', 'notes.txt']);
  // again: nothing left to do; a folder without a log is fine too
  t.deepEqual(await prepareRunFolder(dir, { overwrite: false, resumedFrom: resumed, step: 4 }), { removed: [], logLinesDropped: 0 });
  const noLog = tmp();
  const first = fakeCheckpoint(noLog, 1, 'a');
  t.deepEqual(await prepareRunFolder(noLog, { overwrite: false, resumedFrom: first, step: 1 }), { removed: [], logLinesDropped: 0 });
});

test('a folder that is a file is refused with a sentence', async (t) => {
  const dir = tmp();
  writeFileSync(path.join(dir, 'taken'), 'x');
  await t.throwsAsync(prepareRunFolder(path.join(dir, 'taken'), { overwrite: true, step: 0 }),
    { message: /cannot use .*taken as the output folder: a file of that name exists and is not a folder/, code: 'EEXIST' });
  t.is(readFileSync(path.join(dir, 'taken'), 'utf8'), 'x');
});

test('the newest checkpoint of a run ignores other runs\' and older versions\' checkpoints', async (t) => {
  const dir = tmp();
  fakeCheckpoint(dir, 2, 'a');
  const a4 = fakeCheckpoint(dir, 4, 'a');
  const b10 = fakeCheckpoint(dir, 10, 'b');
  fakeCheckpoint(dir, 12);  // no run id: written by an older version
  writeFileSync(path.join(dir, 'ckpt-20.safetensors'), 'not a safetensors file');
  t.is(await newestRunCheckpoint(dir, 'a'), a4);
  t.is(await newestRunCheckpoint(dir, 'b'), b10);
  t.is(await newestRunCheckpoint(dir, 'c'), undefined);
  t.is(await newestRunCheckpoint(path.join(dir, 'missing'), 'a'), undefined);
});

test('pruning keeps the newest of the run\'s checkpoints and leaves other runs\' alone', async (t) => {
  const dir = tmp();
  for (const step of [1, 2, 3]) fakeCheckpoint(dir, step, 'a');
  fakeCheckpoint(dir, 100, 'b');
  t.deepEqual(await pruneRunCheckpoints(dir, 2, 'a'), [path.join(dir, 'ckpt-1.safetensors')]);
  t.deepEqual(files(dir), ['ckpt-100.safetensors', 'ckpt-2.safetensors', 'ckpt-3.safetensors']);
});

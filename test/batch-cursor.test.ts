// The data order shared by the Trainer and the FineTuner (lib/batch-cursor.ts): seeded epoch
// shuffles read in full batches (the partial batch at an epoch's end dropped), the move to the
// next epoch, a queue started from a saved cursor repeating the batches of an uninterrupted run,
// batches started strictly in order whatever the prefetch depth, a rank's slice of the global
// batch, and bad cursors refused (also by Trainer.resume and FineTuner.resume).
import test from 'ava';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BatchQueue, EpochBatches, assertDataCursor, type DataCursor } from '../lib/batch-cursor.js';
import { seededRng } from '../lib/rng.js';

const batchesOf = (count: number, batchSize: number, seed = 1) => new EpochBatches(count, batchSize, (epoch) => seededRng(seed, epoch));

/** The batches a queue gives: where each starts and its indices. */
function drain(batches: EpochBatches, from: DataCursor, n: number, prefetch = 0, slice?: { offset: number; size: number }) {
  const queue = new BatchQueue(batches, { from, batches: n, prefetch, slice, start: (indices) => indices });
  const taken = [];
  queue.fill();
  for (let i = 0; i < n; i++) {
    const b = queue.take();
    queue.fill();
    taken.push({ epoch: b.epoch, position: b.position, next: b.next, indices: [...b.loading] });
  }
  return taken;
}

test('an epoch is read in full batches; with no full batch left the cursor moves to the next epoch', (t) => {
  const b = batchesOf(10, 4);
  t.is(b.batchesPerEpoch, 2);
  t.deepEqual(b.batchStart({ epoch: 0, position: 4 }), { epoch: 0, position: 4 });
  t.deepEqual(b.batchStart({ epoch: 0, position: 8 }), { epoch: 1, position: 0 }, '2 samples left: no full batch');
  t.deepEqual(b.batchStart({ epoch: 3, position: 10 }), { epoch: 4, position: 0 });
  t.deepEqual(b.batchStart({ epoch: 0, position: 25 }), { epoch: 1, position: 0 }, 'past the end (a smaller dataset): the next epoch');
  t.deepEqual(b.after({ epoch: 0, position: 0 }), { epoch: 0, position: 4 });
  t.deepEqual(b.after({ epoch: 0, position: 4 }), { epoch: 1, position: 0 });
  const exact = batchesOf(12, 4);
  t.deepEqual(exact.after({ epoch: 2, position: 4 }), { epoch: 2, position: 8 }, 'the last batch fills the epoch exactly');
  t.deepEqual(exact.after({ epoch: 2, position: 8 }), { epoch: 3, position: 0 });
  const places = drain(b, { epoch: 0, position: 0 }, 7).map(({ epoch, position, next }) => [epoch, position, next]);
  t.deepEqual(places, [[0, 0, 4], [0, 4, 8], [1, 0, 4], [1, 4, 8], [2, 0, 4], [2, 4, 8], [3, 0, 4]]);
});

test('each epoch is a seeded shuffle and its partial last batch is dropped', (t) => {
  const b = batchesOf(10, 4, 7);
  const taken = drain(b, { epoch: 0, position: 0 }, 6);
  for (let epoch = 0; epoch < 3; epoch++) {
    const order = [...batchesOf(10, 4, 7).order(epoch)];
    t.deepEqual([...order].sort((x, y) => x - y), [...Array(10).keys()], `epoch ${epoch}: a permutation`);
    const read = taken.filter((x) => x.epoch === epoch).flatMap((x) => x.indices);
    t.deepEqual(read, order.slice(0, 8), `epoch ${epoch}: two full batches in the epoch's order, the last 2 samples dropped`);
  }
  t.notDeepEqual([...b.order(1)], [...b.order(2)], 'each epoch its own order');
  t.notDeepEqual([...batchesOf(10, 4, 8).order(1)], [...b.order(1)], 'another seed, another order');
  t.deepEqual([...batchesOf(10, 4, 7).order(5)], [...batchesOf(10, 4, 7).order(5)], 'the order depends only on (seed, epoch)');
});

test('a queue started from a saved cursor gives the batches of an uninterrupted run', (t) => {
  const b = batchesOf(13, 3, 2);
  const straight = drain(b, { epoch: 0, position: 0 }, 11);
  for (const k of [1, 3, 4, 7, 10]) {
    // the Trainer saves the position after the batch as it is; the FineTuner the cursor moved on (after())
    const lazy = { epoch: straight[k - 1].epoch, position: straight[k - 1].next };
    const eager = b.after(straight[k - 1]);
    for (const from of [lazy, eager])
      t.deepEqual(drain(batchesOf(13, 3, 2), from, 11 - k, 2), straight.slice(k), `resumed after ${k} batches from ${JSON.stringify(from)}`);
  }
});

test('batches start strictly in order, `prefetch` ahead of the one taken, none beyond the last', (t) => {
  const b = batchesOf(9, 2, 4);
  const reference = drain(b, { epoch: 0, position: 0 }, 7);
  for (const prefetch of [0, 1, 3, 10]) {
    const events: string[] = [];
    const started: number[][] = [];
    const queue = new BatchQueue(batchesOf(9, 2, 4), {
      from: { epoch: 0, position: 0 }, batches: 7, prefetch,
      start: (indices, at) => { events.push(`start ${at.ordinal}`); started.push([...indices]); return at.ordinal; },
    });
    queue.fill();
    for (let i = 0; i < 7; i++) {
      const batch = queue.take();
      events.push(`take ${batch.loading}`);
      t.is(batch.ordinal, i);
      t.is(queue.queued, Math.max(0, Math.min(prefetch, 7 - i) - 1), `prefetch ${prefetch}: still queued after taking batch ${i}`);
      queue.fill();
    }
    t.deepEqual(started, reference.map((r) => r.indices), `prefetch ${prefetch}: the same batches in the same order`);
    const expected: string[] = [];
    for (let i = 0; i < Math.min(prefetch, 7); i++) expected.push(`start ${i}`);
    for (let i = 0; i < 7; i++) {
      if (prefetch === 0) expected.push(`start ${i}`);
      expected.push(`take ${i}`);
      if (prefetch > 0 && i + prefetch < 7) expected.push(`start ${i + prefetch}`);
    }
    t.deepEqual(events, expected, `prefetch ${prefetch}: started in order, each batch before it is taken`);
    t.throws(() => queue.take(), { instanceOf: RangeError, message: 'BatchQueue: all 7 batches of the run were taken' });
  }
});

test('the ranks\' slices of a global batch make up the whole batch', (t) => {
  const whole = drain(batchesOf(20, 6, 3), { epoch: 0, position: 0 }, 5);
  const ranks = [0, 1, 2].map((r) => drain(batchesOf(20, 6, 3), { epoch: 0, position: 0 }, 5, 1, { offset: 2 * r, size: 2 }));
  for (let i = 0; i < 5; i++) {
    t.deepEqual(ranks.flatMap((r) => r[i].indices), whole[i].indices, `batch ${i}`);
    for (const r of ranks) t.deepEqual([r[i].epoch, r[i].position, r[i].next], [whole[i].epoch, whole[i].position, whole[i].next]);
  }
  t.throws(() => batchesOf(20, 6).indices({ epoch: 0, position: 0 }, 4, 3), { instanceOf: RangeError, message: /no samples \[4, 7\) of a batch of 6/ });
});

test('a bad cursor is refused with a clear error', (t) => {
  for (const [cursor, message] of [
    [{ epoch: -1, position: 0 }, 'ckpt.safetensors: the data cursor\'s epoch must be a non-negative integer, but it is -1'],
    [{ epoch: 0, position: 1.5 }, 'ckpt.safetensors: the data cursor\'s position must be a non-negative integer, but it is 1.5'],
    [{ epoch: 0, position: '4' }, 'ckpt.safetensors: the data cursor\'s position must be a non-negative integer, but it is "4"'],
    [{ epoch: 0 }, 'ckpt.safetensors: the data cursor\'s position must be a non-negative integer, but it is undefined'],
    [{ epoch: Number.NaN, position: 0 }, 'ckpt.safetensors: the data cursor\'s epoch must be a non-negative integer, but it is NaN'],
    [null, 'ckpt.safetensors: the data cursor\'s epoch must be a non-negative integer, but it is undefined'],
  ] as const)
    t.throws(() => assertDataCursor('ckpt.safetensors', cursor), { instanceOf: RangeError, message }, JSON.stringify(cursor));
  t.notThrows(() => assertDataCursor('ckpt', { epoch: 3, position: 40 }), 'past the end is a place (the next epoch follows)');
  const b = batchesOf(10, 4);
  t.throws(() => new BatchQueue(b, { from: { epoch: 0, position: -4 }, batches: 1, prefetch: 0, start: () => 0 }),
    { instanceOf: RangeError, message: /^BatchQueue: the data cursor's position must be a non-negative integer/ });
  t.throws(() => new BatchQueue(b, { from: { epoch: 0, position: 0 }, batches: 1, prefetch: -1, start: () => 0 }),
    { instanceOf: RangeError, message: 'BatchQueue: prefetch must be a non-negative integer, not -1' });
  t.throws(() => batchesOf(3, 4), { instanceOf: RangeError, message: 'EpochBatches: batchSize must be an integer in 1..3, not 4' });
});

// Trainer.resume and FineTuner.resume: a checkpoint whose cursor is no place in the data is refused
// before the run starts (it would read batches of the wrong length or none at all).
test('Trainer.resume and FineTuner.resume refuse a checkpoint with a bad data cursor', async (t) => {
  const { EMAE, Trainer, Classifier, FineTuner, saveCheckpoint, saveClassifierCheckpoint } = await import('../lib/index.js');
  const dir = mkdtempSync(path.join(tmpdir(), 'emae-cursor-'));
  const model = await EMAE.create({ imageSize: 8, patchSize: 4, embedDim: 8, depth: 1, numHeads: 2, decoderEmbedDim: 8, decoderDepth: 1,
    decoderNumHeads: 2, device: 'cpu', threads: 1 });
  t.teardown(() => model.dispose());
  const data = { images: new Float32Array(6 * 3 * 64), count: 6 };
  const pretrain = path.join(dir, 'pretrain.safetensors');
  await saveCheckpoint(pretrain, model, { step: 2, epoch: 0, position: 'x', seed: 0, globalBatch: 2, accumulate: 1, worldSize: 1, runId: 'r' });
  await t.throwsAsync(new Trainer(model, data, { batchSize: 2, steps: 4 }).resume(pretrain),
    { instanceOf: RangeError, message: `resume: ${pretrain}: the data cursor's position must be a non-negative integer, but it is "x"` });

  const clf = await Classifier.create({ imageSize: 8, patchSize: 4, channels: 3, embedDim: 8, depth: 1, numHeads: 2, numClasses: 2, device: 'cpu', threads: 1 });
  t.teardown(() => clf.dispose());
  const labelled = { images: new Float32Array(6 * 3 * 64), labels: new Int32Array(6), count: 6, channels: 3, size: 8 };
  const finetune = path.join(dir, 'finetune.safetensors');
  await saveClassifierCheckpoint(finetune, clf, { step: 1, epoch: -1, position: 2, seed: 0, batchSize: 2, runId: 'r' });
  await t.throwsAsync(new FineTuner(clf, labelled, { batchSize: 2, epochs: 2 }).resume(finetune),
    { instanceOf: RangeError, message: `resume: ${finetune}: the data cursor's epoch must be a non-negative integer, but it is -1` });
});

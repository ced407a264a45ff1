// Parallel mask strategy (DESIGN §1): property tests of the permutations and the parts they
// define, determinism of the seeded stream and its resumption, and permutation validation.
import test from 'ava';
import fc from 'fast-check';
import { ParallelMasker, validatePermutation } from '../lib/masker.js';
import { resolveConfig } from '../lib/config.js';

/** A masker layout: N = V·K_total patches, K ≤ K_total parts, a seed, a batch size. */
const layout = fc.record({
  partsTotal: fc.integer({ min: 1, max: 8 }),
  visiblePerPart: fc.integer({ min: 1, max: 12 }),
  partsFraction: fc.double({ min: 0, max: 1, noNaN: true }),
  seed: fc.nat({ max: 0xffffffff }),
  batchSize: fc.integer({ min: 1, max: 5 }),
}).map(({ partsTotal, visiblePerPart, partsFraction, seed, batchSize }) => ({
  partsTotal,
  visiblePerPart,
  numPatches: partsTotal * visiblePerPart,
  parts: Math.max(1, Math.ceil(partsFraction * partsTotal)),
  seed,
  batchSize,
}));

function makeMasker(l: { numPatches: number; partsTotal: number; parts: number; seed: number }): ParallelMasker {
  return new ParallelMasker({ numPatches: l.numPatches, partsTotal: l.partsTotal, parts: l.parts, seed: l.seed });
}

function isPermutation(row: Int32Array, n: number): boolean {
  if (row.length !== n) return false;
  const seen = new Uint8Array(n);
  for (const v of row) {
    if (v < 0 || v >= n || seen[v]) return false;
    seen[v] = 1;
  }
  return true;
}

// ---- normal cases -----------------------------------------------------------------------------

test('rows are permutations of 0..N-1', (t) => {
  fc.assert(fc.property(layout, (l) => {
    const m = makeMasker(l);
    const perm = m.next(l.batchSize);
    if (perm.length !== l.batchSize * l.numPatches) return false;
    for (let b = 0; b < l.batchSize; b++) {
      if (!isPermutation(perm.subarray(b * l.numPatches, (b + 1) * l.numPatches), l.numPatches)) return false;
    }
    validatePermutation(perm, l.batchSize, l.numPatches);
    return true;
  }));
  t.pass();
});

test("parts' visible sets are disjoint, of size V, and cover all N patches when K = K_total", (t) => {
  fc.assert(fc.property(layout, (l) => {
    const m = makeMasker(l);
    const perm = m.next(l.batchSize);
    for (let b = 0; b < l.batchSize; b++) {
      const count = new Int32Array(l.numPatches);
      for (let k = 0; k < m.parts; k++) {
        const visible = m.visibleIndices(perm, b, k);
        if (visible.length !== l.visiblePerPart) return false;
        for (const n of visible) count[n]++;
        const masked = m.maskedIndices(perm, b, k);
        if (masked.length !== l.numPatches - l.visiblePerPart) return false;
        // masked = complement of visible, ascending
        for (let i = 1; i < masked.length; i++) if (masked[i] <= masked[i - 1]) return false;
        for (const n of masked) if (visible.includes(n)) return false;
      }
      for (const c of count) if (c > 1) return false;
      const covered = count.reduce((a, c) => a + c, 0);
      if (covered !== m.parts * l.visiblePerPart) return false;
      if (m.parts === m.partsTotal && count.some((c) => c !== 1)) return false;
    }
    return true;
  }));
  t.pass();
});

test('partOf agrees with visibleIndices', (t) => {
  fc.assert(fc.property(layout, (l) => {
    const m = makeMasker(l);
    const perm = m.next(l.batchSize);
    const part = m.partOf(perm);
    const same = ParallelMasker.partOf(perm, l.numPatches, l.visiblePerPart, l.parts);
    if (part.length !== perm.length || !part.every((v, i) => v === same[i])) return false;
    for (let b = 0; b < l.batchSize; b++) {
      const expected = new Int32Array(l.numPatches).fill(-1);
      for (let k = 0; k < l.parts; k++) {
        for (const n of ParallelMasker.visibleIndices(perm, l.numPatches, l.visiblePerPart, b, k)) expected[n] = k;
      }
      for (let n = 0; n < l.numPatches; n++) if (part[b * l.numPatches + n] !== expected[n]) return false;
    }
    const none = part.filter((v) => v === -1).length;
    return none === l.batchSize * (l.partsTotal - l.parts) * l.visiblePerPart;
  }));
  t.pass();
});

test('visibleIndices follows the permutation order', (t) => {
  const perm = Int32Array.from([3, 1, 0, 2, 7, 5, 4, 6]); // B = 2, N = 4, V = 2
  t.deepEqual([...ParallelMasker.visibleIndices(perm, 4, 2, 0, 0)], [3, 1]);
  t.deepEqual([...ParallelMasker.visibleIndices(perm, 4, 2, 0, 1)], [0, 2]);
  t.deepEqual([...ParallelMasker.maskedIndices(perm, 4, 2, 0, 0)], [0, 2]);
  const perm2 = Int32Array.from([3, 1, 0, 2, 1, 3, 2, 0]);
  t.deepEqual([...ParallelMasker.partOf(perm2, 4, 2, 2)], [1, 0, 1, 0, 1, 0, 1, 0]);
  t.deepEqual([...ParallelMasker.partOf(perm2, 4, 2, 1)], [-1, 0, -1, 0, -1, 0, -1, 0]);
});

test('the same seed gives the same masks, a different seed different ones', (t) => {
  fc.assert(fc.property(layout, fc.nat({ max: 0xffffffff }), (l, other) => {
    fc.pre(l.numPatches >= 8 && other !== l.seed);
    const a = makeMasker(l);
    const b = makeMasker(l);
    const c = makeMasker({ ...l, seed: other });
    const a1 = a.next(l.batchSize); const a2 = a.next(l.batchSize);
    const b1 = b.next(l.batchSize); const b2 = b.next(l.batchSize);
    const c1 = c.next(l.batchSize); const c2 = c.next(l.batchSize);
    const eq = (x: Int32Array, y: Int32Array) => x.length === y.length && x.every((v, i) => v === y[i]);
    // 8! = 40320 orderings per row and two draws: a collision is (practically) impossible
    return eq(a1, b1) && eq(a2, b2) && !(eq(a1, c1) && eq(a2, c2)) && !eq(a1, a2);
  }));
  t.pass();
});

test('getState/setState resumes the same stream', (t) => {
  fc.assert(fc.property(layout, fc.integer({ min: 0, max: 4 }), (l, skip) => {
    const a = makeMasker(l);
    for (let i = 0; i < skip; i++) a.next(l.batchSize);
    const state = a.getState();
    const expected = [a.next(l.batchSize), a.next(2)];
    // a fresh masker with another seed, moved to the saved state (as a checkpoint resume does)
    const b = makeMasker({ ...l, seed: (l.seed + 1) >>> 0 });
    b.setState(JSON.parse(JSON.stringify(state)) as number[]);
    const got = [b.next(l.batchSize), b.next(2)];
    return got.every((g, i) => g.length === expected[i].length && g.every((v, j) => v === expected[i][j]));
  }));
  t.pass();
});

test('permutations are uniform (all 24 orders of 4 patches equally often)', (t) => {
  const m = new ParallelMasker({ numPatches: 4, seed: 123 });
  const rows = 24_000;
  const perm = m.next(rows);
  const counts = new Map<string, number>();
  for (let b = 0; b < rows; b++) {
    const key = perm.subarray(4 * b, 4 * b + 4).join(',');
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  t.is(counts.size, 24);
  // 1000 expected each, standard deviation ~31: a fixed seed, so ±250 is a bias check, not a flake
  for (const [key, c] of counts) t.true(c > 750 && c < 1250, `${key}: ${c}`);
});

test('getState returns a copy', (t) => {
  const m = new ParallelMasker({ numPatches: 16 });
  const s = m.getState();
  s[0] = 12345;
  t.notDeepEqual(m.getState(), s);
});

test('fromConfig uses the config sizes and seed', (t) => {
  const c = resolveConfig({ preset: 'cpu-tiny', parts: 3, seed: 5 });
  const m = ParallelMasker.fromConfig(c);
  t.like(m, { numPatches: 64, partsTotal: 4, parts: 3, visiblePerPart: 16 });
  const same = new ParallelMasker({ numPatches: 64, maskRatio: 0.75, parts: 3, seed: 5 });
  t.deepEqual(m.next(2), same.next(2));
});

test('maskRatio defaults to 0.75 and parts to K_total', (t) => {
  t.like(new ParallelMasker({ numPatches: 16 }), { partsTotal: 4, parts: 4, visiblePerPart: 4 });
  t.like(new ParallelMasker({ numPatches: 16, maskRatio: 0.5, parts: 1 }), { partsTotal: 2, parts: 1, visiblePerPart: 8 });
});

// ---- bad calls --------------------------------------------------------------------------------

test('validatePermutation names the first bad row', (t) => {
  const ok = Int32Array.from([0, 1, 2, 3, 3, 2, 1, 0]);
  t.notThrows(() => validatePermutation(ok, 2, 4));
  const dup = Int32Array.from([...Array(16).keys(), 0, 1, 2, 3, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
  const e1 = t.throws(() => validatePermutation(dup, 2, 16), { instanceOf: RangeError });
  t.is(e1!.message, 'permutation row 1 is not a permutation of 0..15: 3 appears twice');
  const out = Int32Array.from([0, 1, 2, 4]);
  const e2 = t.throws(() => validatePermutation(out, 1, 4), { instanceOf: RangeError });
  t.regex(e2!.message, /permutation row 0 .*4 \(at column 3\) is out of range/);
  const neg = Int32Array.from([0, 1, 2, 3, 0, -1, 2, 3]);
  t.regex(t.throws(() => validatePermutation(neg, 2, 4), { instanceOf: RangeError })!.message, /row 1.*-1/);
});

test('validatePermutation: wrong kind and wrong length', (t) => {
  const e1 = t.throws(() => validatePermutation(Uint32Array.from([0, 1]), 1, 2), { instanceOf: TypeError });
  t.regex(e1!.message, /Int32Array.*permutation.*Uint32Array\(2\)/);
  t.throws(() => validatePermutation([0, 1], 1, 2), { instanceOf: TypeError, message: /permutation/ });
  const e2 = t.throws(() => validatePermutation(new Int32Array(6), 2, 4), { instanceOf: RangeError });
  t.regex(e2!.message, /permutation of length .*= 8 but received length 6/);
  t.throws(() => validatePermutation(new Int32Array(4), 0, 4), { instanceOf: RangeError, message: /batchSize/ });
});

test('validatePermutation rejects any corrupted row (property)', (t) => {
  fc.assert(fc.property(layout, fc.nat(), fc.nat(), (l, rowPick, colPick) => {
    fc.pre(l.numPatches >= 2);
    const perm = makeMasker(l).next(l.batchSize);
    const row = rowPick % l.batchSize;
    const col = colPick % l.numPatches;
    const base = row * l.numPatches;
    // overwrite one entry with another entry of the same row: a duplicate
    perm[base + col] = perm[base + ((col + 1) % l.numPatches)];
    try {
      validatePermutation(perm, l.batchSize, l.numPatches);
      return false;
    } catch (err) {
      return err instanceof RangeError && err.message.startsWith(`permutation row ${row} `);
    }
  }));
  t.pass();
});

test('bad masker options', (t) => {
  t.throws(() => new ParallelMasker({ numPatches: 15 }), { instanceOf: RangeError, message: /N=15 patches do not split into K_total=4 parts/ });
  t.throws(() => new ParallelMasker({ numPatches: 0 }), { instanceOf: RangeError, message: /numPatches/ });
  t.throws(() => new ParallelMasker({ numPatches: '16' as unknown as number }), { instanceOf: TypeError, message: /numPatches/ });
  t.throws(() => new ParallelMasker({ numPatches: 16, parts: 5 }), { instanceOf: RangeError, message: /parts/ });
  t.throws(() => new ParallelMasker({ numPatches: 16, parts: 0 }), { instanceOf: RangeError, message: /parts/ });
  t.throws(() => new ParallelMasker({ numPatches: 16, maskRatio: 1 }), { instanceOf: RangeError, message: /maskRatio/ });
  t.throws(() => new ParallelMasker({ numPatches: 16, maskRatio: 0.5, partsTotal: 4 }), { instanceOf: RangeError, message: /partsTotal.*maskRatio/ });
  t.throws(() => new ParallelMasker({ numPatches: 16, seed: -1 }), { instanceOf: RangeError, message: /seed/ });
  t.throws(() => new ParallelMasker({ numPatches: 16, seed: 1.5 }), { instanceOf: RangeError, message: /seed/ });
  t.throws(() => new ParallelMasker(null as unknown as { numPatches: number }), { instanceOf: TypeError, message: /options/ });
});

test('bad next/setState/helper arguments', (t) => {
  const m = new ParallelMasker({ numPatches: 16 });
  t.throws(() => m.next(0), { instanceOf: RangeError, message: /batchSize/ });
  t.throws(() => m.next(2.5), { instanceOf: RangeError, message: /batchSize/ });
  t.throws(() => m.next('2' as unknown as number), { instanceOf: TypeError, message: /batchSize/ });
  t.throws(() => m.setState([1, 2, 3]), { instanceOf: RangeError, message: /state/ });
  t.throws(() => m.setState([1, 2, 3, 2 ** 31]), { instanceOf: RangeError, message: /state/ });
  t.throws(() => m.setState('x' as unknown as number[]), { instanceOf: TypeError, message: /state/ });
  const perm = m.next(1);
  t.throws(() => m.visibleIndices(perm, 1, 0), { instanceOf: RangeError, message: /\bb\b/ });
  t.throws(() => m.visibleIndices(perm, 0, 4), { instanceOf: RangeError, message: /\bk\b/ });
  t.throws(() => ParallelMasker.partOf(perm, 16, 4, 5), { instanceOf: RangeError, message: /parts/ });
  t.throws(() => ParallelMasker.partOf(new Int32Array(15), 16, 4, 4), { instanceOf: RangeError, message: /perm/ });
  t.throws(() => ParallelMasker.visibleIndices(Array.from(perm) as unknown as Int32Array, 16, 4, 0, 0), { instanceOf: TypeError, message: /perm/ });
  // a failed setState leaves the stream alone
  const s = m.getState();
  t.throws(() => m.setState([0]));
  t.deepEqual(m.getState(), s);
});

test('a batch too large to hold is a RangeError naming the size, not an allocation failure', (t) => {
  const m = new ParallelMasker({ numPatches: 16, maskRatio: 0.75 });
  t.throws(() => m.next(1e9), { instanceOf: RangeError, message: /at most 16777216 \(16 patches each, 268435456 indices.*received 1000000000/ });
  t.is(m.next(2).length, 32, 'the masker still works');
});

test('forSamples refuses a batch too large to hold, like next', (t) => {
  const m = new ParallelMasker({ numPatches: 16, maskRatio: 0.75 });
  t.throws(() => m.forSamples(0, 1e9), { instanceOf: RangeError, message: /at most 16777216/ });
  t.deepEqual(m.forSamples(5, 2).subarray(16), m.forSamples(6, 1), 'a sample\'s row depends only on its index');
});

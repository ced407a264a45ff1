// The opt-in bf16 CPU matmuls (cpuMatmul 'bf16': GEMM operands rounded to bf16, fp32 sums; on
// Intel AMX tiles, native/cpu/gemm_amx.cc, or else with AVX512-BF16's VDPBF16PS,
// native/cpu/gemm_avx512bf16.cc). Op level: gemm() itself in all four layouts (odd and tiny
// sizes, K odd: the pair padding, leading dimensions wider than the rows, the epilogue) and each
// GEMM op, against the float64 reference run on the bf16-rounded operands, which they must match
// to fp32 round-off (a wrong packing, pair order or tile edge gives O(1e-2..1) errors); bitwise
// the same for any thread count. Model level: close to the fp32 model, still bitwise independent
// of the thread count, and it trains. EMAE_BF16_KERNEL (in a child process) runs the AVX512-BF16
// kernel on AMX machines too and shows the clear error where no kernel may run. On a machine
// without either kernel every test says so and checks the clear error instead.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Classifier, EMAE, ParallelMasker, type ClassifierConfig, type EMAEConfig } from '../lib/index.js';
import { native } from '../lib/native.js';
import { bf16, checkGemm, layouts, round } from './helpers/bf16-gemm.js';
import { randn as randnFrom, relL2, seededRng } from './helpers/numeric.js';
import { gratings } from './helpers/synthetic.js';

const { available, kernel, reason } = native().cpuBf16Available();
const rng = seededRng(21);
const randn = (n: number, scale = 1) => randnFrom(n, rng, scale);
const cpuinfo = (() => {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return '';  // not Linux: the kernel choice is not checked against the CPU's flags
  }
})();
const cpuHas = (flag: string) => new RegExp(`\\b${flag}\\b`).test(cpuinfo);
const helper = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'bf16-kernel-check.ts');
function inChild(bf16Kernel: string) {
  const out = execFileSync(process.execPath, ['--import=tsx', helper], {
    env: { ...process.env, EMAE_BF16_KERNEL: bf16Kernel }, encoding: 'utf8',
  });
  return JSON.parse(out.trim().split('\n').pop()!);
}

const tiny: EMAEConfig = {
  imageSize: 16, patchSize: 4, channels: 3, embedDim: 32, depth: 2, numHeads: 2, decoderEmbedDim: 32,
  decoderDepth: 1, decoderNumHeads: 2, mlpRatio: 2, maskRatio: 0.75, device: 'cpu', threads: 2, seed: 5,
};

function seededRandn(seed: number) {
  const r = seededRng(seed);
  return (n: number, scale = 1) => randnFrom(n, r, scale);
}

function skipIfUnavailable(t: any): boolean {
  if (available) return false;
  t.log(`skipped: cpuMatmul 'bf16' is not available here (${reason})`);
  t.pass();
  return true;
}

test('bf16 helper rounds like the packers: nearest even, denormals to zero', (t) => {
  t.is(bf16(1), 1);
  t.is(bf16(1 + 2 ** -8), 1);               // tie → even
  t.is(bf16(1 + 3 * 2 ** -8), 1 + 2 ** -6);  // tie → even (up)
  t.is(bf16(1e-39), 0);
  t.is(bf16(-3.14159), -3.140625);
});

test('the bf16 kernel is the one this CPU should run: AMX, else AVX512-BF16, else none', (t) => {
  t.is(available, kernel !== '');
  t.true(['amx-bf16', 'avx512-bf16', ''].includes(kernel), kernel);
  if (available) t.is(reason, '');
  else t.regex(reason, /AMX.*AVX512-BF16/, 'says what each kernel lacks');
  if (!cpuinfo) return t.log(`no /proc/cpuinfo: kernel '${kernel}' not checked against the CPU`);
  const avx512 = cpuHas('avx512_bf16') && cpuHas('avx512bw') ? 'avx512-bf16' : '';
  if (cpuHas('amx_bf16') && cpuHas('amx_tile')) {
    // the CPU lists AMX: its kernel, unless Linux refuses the tile state (a VM, an old kernel), in
    // which case the AMX-only child says why and the choice falls back to AVX512-BF16
    const amx = inChild('amx-bf16');
    if (amx.available) return t.is(kernel, 'amx-bf16');
    t.log(`AMX listed but not usable here: ${amx.reason}`);
    return t.is(kernel, avx512, `kernel for this CPU (${reason || 'available'})`);
  }
  t.is(kernel, avx512, `kernel for this CPU (${reason || 'available'})`);
});

// M, N, K around the AVX512-BF16 kernel's 12 × 32 tile and the AMX path's 32 × 32 blocks, K odd
// (the last pair half zero; K % 32 above and below 16: the packers' 16-float halves) and K = 1, 2;
// K = 513 crosses the 128-pair depth blocks, N = 800 the
// 768-column panels, M = 300 splits the work by rows, M = 37 by tiles.
const gemmSizes = [[1, 1, 1], [1, 1, 2], [2, 3, 1], [5, 7, 3], [12, 32, 2], [13, 33, 3], [11, 31, 5], [24, 64, 32],
  [25, 65, 33], [7, 45, 25], [29, 70, 95], [3, 5, 17], [37, 100, 257], [300, 97, 513], [40, 800, 64], [17, 48, 1031]];
for (const [M, N, K] of gemmSizes) {
  test(`bf16 gemm() M=${M} N=${N} K=${K}, all four layouts, plain and with epilogue: float64 on bf16-rounded operands`, (t) => {
    if (skipIfUnavailable(t)) return;
    for (const [transA, transB] of layouts)
      for (const [pad, epilogue] of [[0, false], [3, true]] as const) {
        const r = checkGemm({ M, N, K, transA, transB, pad, epilogue }, randn);
        const label = `${transA ? 'T' : 'N'}${transB ? 'T' : 'N'} pad ${pad}${epilogue ? ' accumulate + bias + residual' : ''}`;
        t.true(r.error <= 1e-6, `${label}: relative L2 ${r.error.toExponential(2)}`);
        t.true(r.padKept, `${label}: C's columns past N untouched`);
      }
  });
}

test('bf16 gemm(): bitwise the same for 1, 2, 3 and 5 threads (split by rows and by tiles, all layouts)', (t) => {
  if (skipIfUnavailable(t)) return;
  for (const [M, N, K] of [[300, 800, 513], [40, 200, 300]])
    for (const [transA, transB] of layouts) {
      const c = { M, N, K, transA, transB, pad: 1, epilogue: true };
      const runs = [1, 2, 3, 5].map((threads) => checkGemm(c, seededRandn(M * 31 + N), threads).out);
      for (const [i, threads] of [2, 3, 5].entries())
        t.deepEqual(runs[i + 1], runs[0], `M=${M} N=${N} K=${K} ${+transA}${+transB}: ${threads} threads vs 1`);
    }
});

test('bf16 gemm(): denormal operands count as zero (the to_bf16 contract)', (t) => {
  if (skipIfUnavailable(t)) return;
  const M = 5, N = 40, K = 9;
  const A = randn(M * K).map((x) => x * 1e-39), B = randn(K * N).map((x) => x * 1e30);  // products ~1e-9 if kept
  t.true(bf16(A[0]) === 0, 'A is denormal');
  const out = native().testOp('gemm', { A, B }, { M, N, K, fp32: 1, bf16: 1 }).out;
  t.true(out.every((x) => x === 0), `max |C| ${Math.max(...out.map(Math.abs))}`);
});

test('EMAE_BF16_KERNEL=avx512-bf16 runs the AVX512-BF16 kernel wherever the CPU has it (on AMX machines too)', (t) => {
  const r = inChild('avx512-bf16');
  if (!cpuinfo || !(cpuHas('avx512_bf16') && cpuHas('avx512bw'))) {
    t.false(r.available);
    t.regex(r.createError, /cpuMatmul 'bf16' is not available on this machine: .*AVX512-BF16/);
    return;
  }
  t.is(r.kernel, 'avx512-bf16');
  t.is(r.cases, 20);  // 5 shapes (one with two column panels) × 4 layouts
  t.true(r.worst <= 1e-6, `worst relative L2 ${r.worst}`);
  t.true(r.padKept);
  t.is(r.createError, '');
});

test("EMAE_BF16_KERNEL=amx-bf16 on a CPU without AMX, or a bad value: cpuMatmul 'bf16' is a clear error", (t) => {
  const bogus = inChild('bogus');
  t.false(bogus.available);
  t.is(bogus.kernel, '');
  t.regex(bogus.createError, /cpuMatmul 'bf16' is not available on this machine: EMAE_BF16_KERNEL='bogus' names no bf16 kernel/);
  if (cpuHas('amx_bf16')) return t.log('this CPU has AMX: the AMX-only case would run');
  const amxOnly = inChild('amx-bf16');
  t.false(amxOnly.available);
  t.regex(amxOnly.reason, /AMX: .*AMX-BF16.*; AVX512-BF16: left out by EMAE_BF16_KERNEL/);
  t.regex(amxOnly.createError, /cpuMatmul 'bf16' is not available on this machine: it needs AMX-BF16 or AVX512-BF16/);
});

for (const [R, K, N] of [[1, 7, 13], [16, 32, 32], [33, 97, 255], [300, 257, 97], [451, 513, 70], [100, 40, 800]]) {
  test(`bf16 GEMM ops R=${R} K=${K} N=${N} match float64 on bf16-rounded operands`, (t) => {
    if (skipIfUnavailable(t)) return;
    const inp = randn(R * K), weight = randn(N * K, 0.5), bias = randn(N), residual = randn(R * N), dout = randn(R * N);
    const geluInp = randn(R * K, 2);
    const bf = (name: string, tensors: Record<string, Float64Array>) => native().testOp(name, tensors, { R, K, N, fp32: 1, bf16: 1 });
    const ref = (name: string, tensors: Record<string, Float64Array>) => native().testOp(name, tensors, { R, K, N });
    const close = (label: string, a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-6) => {
      const e = relL2(a, b);
      t.true(e <= tol, `${label}: relative L2 ${e.toExponential(2)}`);
    };
    close('forward', bf('matmul_forward', { inp, weight, bias, residual }).out,
      ref('matmul_forward', { inp: round(inp), weight: round(weight), bias, residual }).out);
    const b = bf('matmul_backward', { dout, inp, weight });
    const r = ref('matmul_backward', { dout: round(dout), inp: round(inp), weight: round(weight) });
    close('dinp', b.dinp, r.dinp);
    close('dweight', b.dweight, r.dweight);
    close('dbias (fp32 column sums of the unrounded dout)', b.dbias, ref('matmul_backward', { dout, inp, weight }).dbias, 1e-5);
    const gf = bf('matmul_gelu_forward', { inp, weight, bias });
    const gr = ref('matmul_gelu_forward', { inp: round(inp), weight: round(weight), bias });
    close('gelu forward pre', gf.pre, gr.pre);
    close('gelu forward act', gf.act, gr.act, 1e-5);
    close('gelu backward dinp', bf('matmul_backward_gelu', { dout, inp, weight, geluInp }).dinp,
      ref('matmul_backward_gelu', { dout: round(dout), inp: round(inp), weight: round(weight), geluInp }).dinp, 1e-5);
    // and bf16 is really in use: the exact fp32 product differs at bf16's precision
    const exact = ref('matmul_forward', { inp, weight }).out;
    if (K >= 32) t.true(relL2(bf('matmul_forward', { inp, weight }).out, exact) > 1e-4, 'the operands were rounded to bf16');
  });
}

async function lossAndGrads(config: EMAEConfig) {
  const model = await EMAE.create(config);
  try {
    const c = model.config, B = 4;
    const images = gratings(B, c.channels, c.imageSize, 9);
    return await model.lossAndGrads({ images, permutation: ParallelMasker.fromConfig(c, 3).next(B), batchSize: B });
  } finally {
    await model.dispose();
  }
}

test("cpuMatmul 'bf16': loss and gradients close to fp32, bitwise the same for 1, 2 and 3 threads", async (t) => {
  if (skipIfUnavailable(t)) return;
  const fp32 = await lossAndGrads(tiny);
  const one = await lossAndGrads({ ...tiny, cpuMatmul: 'bf16', threads: 1 });
  t.true(Math.abs(one.loss - fp32.loss) <= 1e-2 * Math.abs(fp32.loss), `loss ${one.loss} vs fp32 ${fp32.loss}`);
  t.not(one.loss, fp32.loss, 'bf16 is in use');
  for (const [name, g] of Object.entries(fp32.grads)) {
    const e = relL2(one.grads[name], g);
    t.true(e < 5e-2, `${name}: bf16 vs fp32 relative L2 ${e.toExponential(2)}`);
  }
  for (const threads of [2, 3]) {
    const other = await lossAndGrads({ ...tiny, cpuMatmul: 'bf16', threads });
    t.is(other.loss, one.loss, `${threads} threads`);
    for (const name of Object.keys(one.grads)) t.deepEqual(other.grads[name], one.grads[name], `${name}, ${threads} threads`);
  }
});

test("cpuMatmul 'bf16' on a Classifier: loss and gradients close to fp32, bitwise the same for 1 and 2 threads", async (t) => {
  if (skipIfUnavailable(t)) return;
  const config: ClassifierConfig = {
    imageSize: 16, patchSize: 4, channels: 3, embedDim: 32, depth: 2, numHeads: 2, mlpRatio: 2, numClasses: 5,
    device: 'cpu', threads: 1, seed: 4, dropPath: 0,
  };
  const B = 6, batch = { images: gratings(B, 3, 16, 2), labels: Int32Array.from({ length: B }, (_, b) => b % 5), batchSize: B };
  const run = async (c: ClassifierConfig) => {
    const clf = await Classifier.create(c);
    try {
      return await clf.lossAndGrads(batch);
    } finally {
      await clf.dispose();
    }
  };
  const fp32 = await run(config), one = await run({ ...config, cpuMatmul: 'bf16' }), two = await run({ ...config, cpuMatmul: 'bf16', threads: 2 });
  t.not(one.loss, fp32.loss, 'bf16 is in use');
  t.true(Math.abs(one.loss - fp32.loss) <= 1e-2 * Math.abs(fp32.loss), `loss ${one.loss} vs fp32 ${fp32.loss}`);
  for (const [name, g] of Object.entries(fp32.grads)) t.true(relL2(one.grads[name], g) < 5e-2, `${name}: bf16 vs fp32`);
  t.is(two.loss, one.loss);
  for (const name of Object.keys(one.grads)) t.deepEqual(two.grads[name], one.grads[name], `${name}, 2 threads`);
});

test("cpuMatmul 'bf16' trains: the reconstruction loss falls over 40 steps", async (t) => {
  if (skipIfUnavailable(t)) return;
  const model = await EMAE.create({ ...tiny, cpuMatmul: 'bf16' });
  t.is(model.config.cpuMatmul, 'bf16');
  const c = model.config, B = 8, per = c.channels * c.imageSize * c.imageSize;
  const data = gratings(64, c.channels, c.imageSize, 1), masker = ParallelMasker.fromConfig(c, 4);
  const recon: number[] = [];
  for (let step = 0; step < 40; step++) {
    const start = (step * B) % 64;
    const r = await model.trainStep({ images: data.slice(start * per, (start + B) * per), permutation: masker.next(B), batchSize: B },
      { lr: 1e-3 * Math.min(1, (step + 1) / 10) });
    recon.push(r.recon);
  }
  await model.dispose();
  const first = recon.slice(0, 5).reduce((a, b) => a + b) / 5, last = recon.slice(-5).reduce((a, b) => a + b) / 5;
  t.true(last < 0.8 * first, `recon ${first.toFixed(4)} → ${last.toFixed(4)}`);
});

test("cpuMatmul: a bad value is a RangeError naming the key; 'bf16' without a bf16 kernel is a clear error", async (t) => {
  await t.throwsAsync(EMAE.create({ ...tiny, cpuMatmul: 'fp16' as any }), { instanceOf: RangeError, message: /cpuMatmul/ });
  if (available) {
    t.log(`the ${kernel} kernel runs here (the error is shown through EMAE_BF16_KERNEL above)`);
    const m = await EMAE.create({ ...tiny, cpuMatmul: 'fp32' });
    t.is(m.config.cpuMatmul, 'fp32');
    await m.dispose();
  } else {
    await t.throwsAsync(EMAE.create({ ...tiny, cpuMatmul: 'bf16' }), { message: /cpuMatmul 'bf16' is not available/ });
  }
});

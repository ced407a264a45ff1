// The opt-in bf16 CPU matmuls (cpuMatmul 'bf16': GEMM operands rounded to bf16 on Intel AMX
// tiles, fp32 sums; native/cpu/gemm_amx.cc). Op level: each GEMM op against the float64
// reference run on the bf16-rounded operands, which it must match to fp32 round-off (a wrong
// packing, pair order or tile edge gives O(1e-2..1) errors). Model level: close to the fp32 model,
// still bitwise independent of the thread count, and it trains. On a machine without AMX every
// test says so and checks the clear error instead.
import test from 'ava';
import { EMAE, ParallelMasker, type EMAEConfig } from '../lib/index.js';
import { native } from '../lib/native.js';
import { randn as randnFrom, relL2, seededRng } from './helpers/numeric.js';
import { gratings } from './helpers/synthetic.js';

const { available, reason } = native().cpuBf16Available();
const rng = seededRng(21);
const randn = (n: number, scale = 1) => randnFrom(n, rng, scale);

// float → bf16 → float as the packers round: nearest even, denormals to zero
const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);
function bf16(x: number): number {
  f32[0] = x;
  const u = u32[0];
  u32[0] = (u & 0x7f800000) === 0 ? u & 0x80000000 : ((u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000) >>> 0;
  return f32[0];
}
const round = (a: Float64Array) => a.map(bf16);

const tiny: EMAEConfig = {
  imageSize: 16, patchSize: 4, channels: 3, embedDim: 32, depth: 2, numHeads: 2, decoderEmbedDim: 32,
  decoderDepth: 1, decoderNumHeads: 2, mlpRatio: 2, maskRatio: 0.75, device: 'cpu', threads: 2, seed: 5,
};

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

test("cpuMatmul: a bad value is a RangeError naming the key; 'bf16' without AMX is a clear error", async (t) => {
  await t.throwsAsync(EMAE.create({ ...tiny, cpuMatmul: 'fp16' as any }), { instanceOf: RangeError, message: /cpuMatmul/ });
  if (available) {
    t.log(`AMX is available here, so the missing-AMX error cannot be shown (reason would be: ${reason || 'n/a'})`);
    const m = await EMAE.create({ ...tiny, cpuMatmul: 'fp32' });
    t.is(m.config.cpuMatmul, 'fp32');
    await m.dispose();
  } else {
    await t.throwsAsync(EMAE.create({ ...tiny, cpuMatmul: 'bf16' }), { message: /cpuMatmul 'bf16' is not available/ });
  }
});

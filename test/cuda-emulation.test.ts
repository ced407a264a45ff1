// The new tensor-core kernels on the CPU, where no GPU is: cuda/dev/attention_tc_emulate.cu runs
// the bodies of cuda/attention_tc.cuh (forward, dQ, dK/dV; fp32 and bf16 storage) with a block's
// threads as fibers and ldmatrix/mma/shfl/barriers emulated from the PTX ISA, against a double
// reference, and checks that views mixing fp32 and bf16 are refused;
// cuda/dev/attention_simt_emulate.cu compiles the unchanged SIMT kernels of cuda/attention.cuh for
// the host (CUDA built-ins shimmed: fibers, barriers, shuffles, checked __ldg) and runs them for
// fp32 and bf16 storage against the same reference, bf16 outputs bit for bit the fp32 ones rounded;
// cuda/dev/gemm_sm80_emulate.cu checks gemm_sm80.cuh's swizzle, bank groups and a functional
// emulation of its pipeline, for K-major and MN-major (ldmatrix.trans) operand tiles; cuda/dev/gemm_sm90_emulate.cu runs gemm_sm90.cuh's CTA body with its
// 384 threads as fibers and TMA (128-byte swizzle, zero fill, complete-tx), wgmma (descriptors,
// accumulator fragments, asynchronous groups), mbarrier phases and setmaxnreg emulated from the PTX
// ISA. Both GEMM emulators store through the headers' own epilogue code (gemm.cuh's epilogue_store,
// the split-K reduce's reduce_output) and cover the fused epilogues: GELU forward and backward with
// split-K off and on, and the dweight GEMM whose bias gradient is summed in the fp32 → bf16
// conversion (run with a block's threads as fibers, bf16_convert_emulate.h), which must equal
// the separate column-sum pass bit for bit. cuda/dev/elementwise_bf16_emulate.cu runs the bodies of
// the memory-bound kernels (LayerNorm with the fused backward of bf16 dout, the losses, GELU, AdamW
// with its bf16 weight copy, the token ops) for both storage types: bf16 outputs must be the fp32 outputs rounded, fp32 outputs the same bits.
// All are built with nvcc as host programs (the device
// code is compiled, never run). Without nvcc the tests are skipped and say so; a GPU run
// (scripts/gpu-check.sh) is still what verifies the kernels on hardware.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const nvcc = spawnSync('sh', ['-c', 'command -v nvcc'], { encoding: 'utf8' }).stdout.trim();
if (!nvcc) console.log('cuda-emulation.test: skipped: nvcc is not on PATH (the CUDA toolkit builds the emulators)');
const dir = mkdtempSync(path.join(tmpdir(), 'emae-emulate-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const sh = (cmd: string, args: string[]) => new Promise<{ code: number | null; out: string }>((resolve) => {
  const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  child.on('close', (code) => resolve({ code, out }));
});

async function buildAndRun(source: string, args: string[]) {
  const exe = path.join(dir, path.basename(source, '.cu'));
  const build = await sh(nvcc, ['-std=c++17', '-O2', '--expt-relaxed-constexpr', '-arch=sm_80', '-I.', '-Inative', source, '-o', exe]);
  if (build.code !== 0) return { code: build.code, out: `nvcc failed:\n${build.out}` };
  return sh(exe, args);
}

(nvcc ? test : test.skip)('tensor-core attention (attention_tc.cuh) matches a double reference in CPU emulation', async (t) => {
  const r = await buildAndRun('cuda/dev/attention_tc_emulate.cu', []);
  t.is(r.code, 0, r.out);
  t.regex(r.out, /^PASS: 0 failure\(s\)$/m, r.out);
  t.notRegex(r.out, /^FAIL/m);
  // both storage types ran (bf16: qkv, out, dout, dqkv stored as bf16), and a mix is refused on both paths
  const passed = (storage: string) => r.out.split('\n').filter((l) => l.startsWith(`PASS ${storage} S=`)).length;
  t.true(passed('fp32') >= 10, 'fp32-storage cases ran');
  t.true(passed('bf16') >= 10, 'bf16-storage cases ran');
  for (const path of ['simt', 'tc']) t.regex(r.out, new RegExp(`^PASS mixed storage \\[${path}\\]`, 'm'));
  t.log(passed('fp32'), 'fp32 cases,', passed('bf16'), 'bf16 cases');
});

(nvcc ? test : test.skip)('SIMT attention (attention.cuh) matches a double reference in CPU emulation, fp32 and bf16 storage', async (t) => {
  const r = await buildAndRun('cuda/dev/attention_simt_emulate.cu', []);
  t.is(r.code, 0, r.out);
  t.regex(r.out, /^PASS: 0 failure\(s\)$/m, r.out);
  t.notRegex(r.out, /^FAIL/m);
  const lines = (storage: string) => r.out.split('\n').filter((l) => l.startsWith(`PASS ${storage} S=`));
  t.true(lines('fp32').length >= 10, 'fp32-storage cases ran');
  t.true(lines('bf16').length >= 10, 'bf16-storage cases ran');
  // every bf16 output was the fp32 run's output rounded, bit for bit
  t.true(lines('bf16').every((l) => l.includes('= fp32 rounded')), 'bf16 outputs are the fp32 outputs rounded');
  // every head-dim split ran, on both staging paths
  for (const dims of [1, 2, 3, 4]) t.regex(r.out, new RegExp(`^PASS bf16 .*kDims ${dims}`, 'm'), `kDims ${dims} ran`);
  for (const vec4 of [0, 1]) t.regex(r.out, new RegExp(`^PASS bf16 .*vec4 ${vec4}\\)`, 'm'), `vec4 ${vec4} ran`);
});

(nvcc ? test : test.skip)('Ampere GEMM (gemm_sm80.cuh): swizzle, bank groups, pipeline and fused epilogues in CPU emulation', async (t) => {
  const r = await buildAndRun('cuda/dev/gemm_sm80_emulate.cu', []);
  t.is(r.code, 0, r.out);
  t.regex(r.out, /^ALL PASS$/m, r.out);
  t.notRegex(r.out, /^FAIL/m);
  for (const epilogue of ['gelu-forward', 'gelu-backward', 'a_sums'])
    t.regex(r.out, new RegExp(`^case .*${epilogue}`, 'm'), `an ${epilogue} case ran`);
  // MN-major operands read in place (ldmatrix.trans): the bank check covers their tiles, and cases
  // with A, B and both MN-major ran, with split-K
  t.regex(r.out, /^bank check: .*MN-major/m);
  for (const layout of ['A mn-major', 'B mn-major', 'A,B mn-major'])
    t.regex(r.out, new RegExp(`^case .* ${layout}`, 'm'), `a ${layout} case ran`);
  t.regex(r.out, /^case .*splits=[2-9].* mn-major/m, 'a split-K MN-major case ran');
});

(nvcc ? test : test.skip)('Hopper GEMM (gemm_sm90.cuh): TMA, wgmma descriptors and the mbarrier pipeline in CPU emulation', async (t) => {
  const r = await buildAndRun('cuda/dev/gemm_sm90_emulate.cu', []);
  t.is(r.code, 0, r.out);
  t.regex(r.out, /^PASS: 0 failure\(s\)$/m, r.out);
  t.notRegex(r.out, /^FAIL/m);
  t.log(r.out.trim().split('\n').filter((l) => /^PASS BN=/.test(l)).length, 'runs');
  for (const epilogue of ['gelu-fwd', 'gelu-bwd', 'a_sums'])
    t.regex(r.out, new RegExp(`^PASS BN=.* ${epilogue}`, 'm'), `an ${epilogue} case ran`);
});

(nvcc ? test : test.skip)('bf16 storage of LayerNorm, the losses, GELU, AdamW and token kernels matches their fp32 instantiations in CPU emulation', async (t) => {
  const r = await buildAndRun('cuda/dev/elementwise_bf16_emulate.cu', []);
  t.is(r.code, 0, r.out);
  t.regex(r.out, /^PASS: 0 failure\(s\)$/m, r.out);
  t.notRegex(r.out, /^FAIL/m);
  for (const op of ['layernorm forward', 'layernorm backward', 'layernorm fused backward R=3000 C=768', 'layernorm fused backward R=300 C=192', 'layernorm fused backward R=300 C=384', 'loss B=', 'gelu forward', 'gelu backward', 'convert_to_bf16_flat',
    'adamw with params_bf16', 'adamw_decided, refused', 'gather_visible_patches', 'encoder_tokens_forward',
    'encoder_tokens_backward', 'decoder_tokens_forward', 'decoder_tokens_backward'])
    t.regex(r.out, new RegExp(`^PASS ${op}`, 'm'), `a ${op} case ran`);
  // the loss cases: l1 and mse, norm-pix targets, and a K = 1 case without pairs
  for (const kind of [' l1', ' mse norm-pix', 'K=1/']) t.regex(r.out, new RegExp(`^PASS loss .*${kind}.*double reference`, 'm'));
});

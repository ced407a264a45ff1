// Every CPU GEMM micro-kernel, not only the widest one this machine has: the AVX2 (6×16) and
// portable (4×8) kernels run for users without AVX-512. EMAE_GEMM_KERNEL narrows the choice in a
// child process, which runs the GEMM op checks of gemm.test.ts (fp32 vs float64).
import test from 'ava';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../lib/native.js';

const helper = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'gemm-kernel-check.ts');
const cpuHas = (flag: string) => {
  try {
    return new RegExp(`\\b${flag}\\b`).test(execFileSync('cat', ['/proc/cpuinfo'], { encoding: 'utf8' }));
  } catch {
    return false;  // not Linux: only the default kernel is covered (gemm.test.ts)
  }
};

test('the default kernel is the widest the CPU supports', (t) => {
  const kernel = native().cpuGemmKernel();
  t.true(['avx512', 'avx2', 'generic'].includes(kernel), kernel);
  if (cpuHas('avx512f')) t.is(kernel, 'avx512');
  else if (cpuHas('avx2') && cpuHas('fma')) t.is(kernel, 'avx2');
});

for (const kernel of ['avx2', 'generic'] as const) {
  test(`GEMM ops with the ${kernel} micro-kernel match float64`, (t) => {
    if (kernel === 'avx2' && !(cpuHas('avx2') && cpuHas('fma'))) {
      t.log('skipped: this CPU has no AVX2+FMA, so the avx2 kernel cannot run here');
      t.pass();
      return;
    }
    const out = execFileSync(process.execPath, ['--import=tsx', helper], {
      env: { ...process.env, EMAE_GEMM_KERNEL: kernel }, encoding: 'utf8',
    });
    const r = JSON.parse(out.trim().split('\n').pop()!);
    t.is(r.kernel, kernel);
    t.is(r.cases, 24);
    t.true(r.worst <= 1e-5, `worst relative L2 ${r.worst}`);
  });
}

test('EMAE_GEMM_KERNEL never widens: an unknown value gives the portable kernel', (t) => {
  const out = execFileSync(process.execPath, ['--import=tsx', helper], {
    env: { ...process.env, EMAE_GEMM_KERNEL: 'bogus' }, encoding: 'utf8',
  });
  t.is(JSON.parse(out.trim().split('\n').pop()!).kernel, 'generic');
});

test('cpuInfo() reports threads, the GEMM kernel and whether bf16 matmuls can run', async (t) => {
  const { cpuInfo } = await import('../lib/index.js');
  const info = cpuInfo();
  t.true(Number.isInteger(info.defaultThreads) && info.defaultThreads >= 1);
  t.is(info.gemmKernel, native().cpuGemmKernel());
  t.is(typeof info.bf16Available, 'boolean');
  if (info.bf16Available) t.is(info.bf16Reason, '');
  else t.true(info.bf16Reason.length > 0, 'says why not');
  t.is(info.bf16Kernel, native().cpuBf16Available().kernel);
  t.is(info.bf16Available, info.bf16Kernel !== '');
  const flag = info.bf16Kernel === 'amx-bf16' ? 'amx_bf16' : 'avx512_bf16';
  if (info.bf16Available) t.true(cpuHas(flag), `${info.bf16Kernel}: never available without the CPU flag ${flag}`);
});

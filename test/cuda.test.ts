// The CUDA build path: the addon reports whether it was compiled with the CUDA backend, for
// which architectures, and which devices the CUDA runtime sees. On a machine without a GPU the
// device tests are skipped and say why.
import test from 'ava';
import { EMAE, cudaInfo } from '../lib/index.js';

const info = cudaInfo();
const usable = info.compiled && info.devices.length > 0;
if (!usable) {
  console.log(`cuda.test: device tests skipped: ${info.error ?? 'no CUDA device'}`);
}

test('cudaInfo reports the build and the devices in a stable shape', (t) => {
  t.is(typeof info.compiled, 'boolean');
  t.is(typeof info.architectures, 'string');
  t.true(Array.isArray(info.devices));
  if (info.compiled) {
    t.regex(info.architectures, /^\d+[a-z]?(,\d+[a-z]?)*$/, 'architectures list, e.g. 80,90');
  } else {
    t.is(info.architectures, '');
    t.regex(info.error ?? '', /without the CUDA backend/);
  }
  if (info.devices.length === 0) t.is(typeof info.error, 'string', 'no device: the reason is given');
});

(usable ? test.skip : test)("device 'cuda' without a usable CUDA device is a clear error", async (t) => {
  const err = await t.throwsAsync(EMAE.create({ preset: 'cpu-tiny', device: 'cuda' }));
  t.regex(err!.message, /cuda/i);
});

(usable ? test.skip : test)("device 'auto' falls back to the CPU without a usable CUDA device", async (t) => {
  const model = await EMAE.create({ imageSize: 8, patchSize: 2, embedDim: 8, depth: 1, numHeads: 2,
    decoderEmbedDim: 8, decoderDepth: 1, decoderNumHeads: 2, device: 'auto' });
  t.is(model.device, 'cpu');
  await model.dispose();
});

(usable ? test : test.skip)('each CUDA device reports name, compute capability >= 8.0, SMs and memory', (t) => {
  for (const d of info.devices) {
    t.true(d.name.length > 0);
    t.true(Number(d.computeCapability) >= 8, `${d.name}: compute capability ${d.computeCapability}`);
    t.true(d.multiProcessors > 0);
    t.true(d.totalMemory > 0);
  }
});

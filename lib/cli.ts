#!/usr/bin/env node
// The emae command line. `emae info`: version, backends built, devices found, threads.
// (Pretraining commands come with the trainer.)
import { Command } from 'commander';
import { cudaInfo, version } from './index.js';
import { native } from './native.js';

const program = new Command();
program.name('emae').description('EMAE (masked autoencoder) pretraining of Vision Transformers').version(version);

program
  .command('info')
  .description('show the version, the backends built, the CUDA devices found and the CPU threads')
  .option('--json', 'print JSON')
  .action((opts: { json?: boolean }) => {
    const cuda = cudaInfo();
    const info = {
      version,
      node: process.version,
      backends: cuda.compiled ? ['cpu', 'cuda'] : ['cpu'],
      cudaArchitectures: cuda.architectures,
      cudaDevices: cuda.devices,
      cudaError: cuda.error,
      cpuThreads: native().defaultThreads(),
    };
    if (opts.json) {
      console.log(JSON.stringify(info, null, 2));
      return;
    }
    console.log(`emae ${version} (node ${process.version})`);
    console.log(`backends built: ${info.backends.join(', ')}${cuda.compiled ? ` (CUDA architectures ${cuda.architectures})` : ''}`);
    console.log(`CPU threads (default): ${info.cpuThreads}`);
    if (cuda.devices.length === 0) console.log(`CUDA devices: none${cuda.error ? ` (${cuda.error})` : ''}`);
    for (const d of cuda.devices)
      console.log(`CUDA device ${d.index}: ${d.name}, compute capability ${d.computeCapability}, ${d.multiProcessors} SMs, ` +
        `${(d.totalMemory / 2 ** 30).toFixed(1)} GiB (${(d.freeMemory / 2 ** 30).toFixed(1)} GiB free)`);
  });

program.parseAsync().catch((err: Error) => {
  console.error(`emae: ${err.message}`);
  process.exit(1);
});

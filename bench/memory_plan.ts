// The memory a training step holds, planned (nothing allocated, any machine): parameters,
// gradients, AdamW moments, the bf16 weight copy and the activation arena, with fp32 and with bf16
// activations (EMAE_ACTIVATIONS; DESIGN's issue 11), from the planner that lays the arena out.
//   node --import=tsx bench/memory_plan.ts
import { EMAE } from '../lib/index.js';

const gib = (bytes: number) => (bytes / 2 ** 30).toFixed(2);
const rows: Array<[string, Parameters<typeof EMAE.memoryPlan>[0], number]> = [
  ['vit-base/16 EMAE K=4', { preset: 'vit-base', parts: 4 }, 64],
  ['vit-base/16 EMAE K=4', { preset: 'vit-base', parts: 4 }, 128],
  ['vit-base/16 MAE K=1', { preset: 'vit-base', parts: 1 }, 256],
];
console.log('| model | batch | activations fp32 GiB | total fp32 GiB | activations bf16 GiB | total bf16 GiB | bf16 / fp32 total |');
console.log('|---|---|---|---|---|---|---|');
for (const [name, config, batch] of rows) {
  const wide = EMAE.memoryPlan(config, batch, { activations: 'fp32' });
  const narrow = EMAE.memoryPlan(config, batch, { activations: 'bf16' });
  console.log(`| ${name} | ${batch} | ${gib(wide.activations)} | ${gib(wide.total)} | ${gib(narrow.activations)} | ` +
    `${gib(narrow.total)} | ${(narrow.total / wide.total).toFixed(2)} |`);
}

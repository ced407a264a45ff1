// Shared by the tests of refused calls: a temporary folder removed after the test, and the check
// that a refused call left the model's parameters and optimizer state as they were.
import type { ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { EMAE } from '../../lib/index.js';

export async function tempDir(t: { teardown: (fn: () => Promise<void>) => void }, prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs `body`, then checks that the parameters and the optimizer state did not change. */
export async function unchanged(t: ExecutionContext, model: EMAE, body: () => Promise<void>): Promise<void> {
  const params = await model.stateDict();
  const optim = await model.getOptimizerState();
  await body();
  t.deepEqual(await model.stateDict(), params, 'parameters changed by a refused call');
  t.deepEqual(await model.getOptimizerState(), optim, 'optimizer state changed by a refused call');
}

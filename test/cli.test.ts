// `emae info` runs and reports the build; an unknown command fails with a message.
import test from 'ava';
import { spawnSync } from 'node:child_process';

const cli = (...args: string[]) => spawnSync(process.execPath, ['--import=tsx', 'lib/cli.ts', ...args], { encoding: 'utf8' });

test('emae info prints the version, backends and devices', (t) => {
  const r = cli('info');
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /^emae \d+\.\d+\.\d+/);
  t.regex(r.stdout, /backends built: cpu/);
  t.regex(r.stdout, /CUDA device/);
  const j = JSON.parse(cli('info', '--json').stdout);
  t.true(j.backends.includes('cpu'));
  t.is(typeof j.cpuThreads, 'number');
});

test('an unknown command is an error', (t) => {
  const r = cli('no-such-command');
  t.not(r.status, 0);
  t.regex(r.stderr, /unknown command/);
});

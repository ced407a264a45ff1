// The commands in README.md and examples/README.md run as written on this clone, so the docs stay
// true. Each ```sh block runs as one bash script (set -e) in the order of the file, with run folders
// moved to a temporary directory; where the documented run takes minutes, a short variant (fewer
// steps, a subset) replaces a named piece of it, and every such replacement must still match the
// text (an edited command fails here until its plan is updated). The README's TypeScript example
// runs too, importing the package by its name. A block that cannot run here is listed with why.
import test from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync, symlinkSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const root = path.resolve(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), '..');
const FASHION_MNIST = '/usr/share/datasets/fashion-mnist';
const hasFashionMnist = existsSync(path.join(FASHION_MNIST, 'train-images-idx3-ubyte.gz'));
const hasMpirun = spawnSync('mpirun', ['--version']).status === 0;

interface Block { file: string; key: string; text: string }

/** The ```sh blocks of a markdown file, in order, named by their section: `file#Heading` (then `#1`, … for more). */
function shellBlocks(file: string): Block[] {
  const text = readFileSync(path.join(root, file), 'utf8');
  const seen = new Map<string, number>();
  return [...text.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => {
    const heading = [...text.slice(0, m.index).matchAll(/^#+ (.*)$/gm)].pop()?.[1] ?? '';
    const n = seen.get(heading) ?? 0;
    seen.set(heading, n + 1);
    return { file, key: `${file}#${heading}${n ? `#${n}` : ''}`, text: m[1] };
  });
}

/**
 * How each block runs: `replace` pairs (text → text, each must occur) make the short variant,
 * `needs` names what must be installed, `skip` says why a block is not run at all.
 */
type Plan = { replace?: [string, string][]; needs?: 'fashion-mnist' | 'mpirun'; why?: string } | { skip: string };

const plans: Record<string, Plan> = {
  'README.md#Install, test, run': {
    why: '`npm install` and `npm test` are what CI runs around this test; the example runs 5 of its 150 steps',
    replace: [['npm install ', '# npm install '], ['npm test ', '# npm test '], ['npm run example', 'npm run example -- --steps 5 --out runs/synthetic']],
  },
  'README.md#Pretraining from the command line': {
    why: 'the demo runs 3 of its 300 steps; ImageNet is not on this machine (and takes days); `...` stands for a run\'s flags',
    replace: [['synthetic:2048 --steps 300 --batch 64', 'synthetic:64 --steps 3 --batch 16'], ['npx emae pretrain --preset vit-base', ': npx emae pretrain --preset vit-base'],
      ['npx emae pretrain ... --resume', ': npx emae pretrain ... --resume']],
  },
  'README.md#Looking at what the model learned': {
    needs: 'fashion-mnist',
    why: 'the Fashion-MNIST run takes 2 of its 1000 steps (batch 16) and the probe 512 of its images',
    replace: [['--steps 1000', '--steps 2 --batch 16'], ['ckpt-1000', 'ckpt-2'], ['ckpt-300', 'ckpt-3'],
      ['--pad-to 32 --out runs/fm', '--pad-to 32 --limit 512 --epochs 2 --out runs/fm']],
  },
  'README.md#Fine-tuning': {
    needs: 'fashion-mnist',
    why: 'fine-tuning the 2-step checkpoint of the block above takes one epoch on 128 images (batch 16); evaluate takes 128 test images; ' +
      'ImageNet is not on this machine (test/cli-finetune.test.ts runs the folder form on generated folders)',
    replace: [['npx emae finetune --weights runs/vit-base', ': npx emae finetune --weights runs/vit-base'],
      ['npx emae evaluate --weights runs/vit-base-ft', ': npx emae evaluate --weights runs/vit-base-ft'],
      ['ckpt-1000', 'ckpt-2'], ['--epochs 5 --out runs/fm-ft', '--epochs 1 --limit 128 --batch 16 --out runs/fm-ft'],
      ['npx emae evaluate ', 'npx emae evaluate --limit 128 ']],
  },
  'README.md#Many GPUs and machines': {
    needs: 'mpirun',
    why: 'no GPUs, second machine or Slurm here: the CPU ranks run, 2 of their 20 steps',
    replace: [['mpirun -np 4 ', ': mpirun -np 4 '], ['mpirun -np 16 ', ': mpirun -np 16 '], ['srun -N 2', ': srun -N 2'],
      ['--steps 20 --out runs/mpi-demo', '--steps 2 --out runs/mpi-demo']],
  },
  'examples/README.md#Examples': {
    why: 'each example takes a few of its steps',
    replace: [['examples/pretrain-synthetic.ts', 'examples/pretrain-synthetic.ts --steps 5 --out runs/synthetic'],
      ['examples/image-folder.ts', 'examples/image-folder.ts --steps 2 --out runs/folder']],
  },
  'examples/README.md#Examples#1': {
    needs: 'fashion-mnist',
    why: 'the Fashion-MNIST example takes 5 of its 300 steps; the study runs on 256 training and 64 test images',
    replace: [['tsx examples/fashion-mnist.ts', 'tsx examples/fashion-mnist.ts --steps 5 --out runs/fashion-mnist'],
      ['--train-count 10000 --test-count 2000', '--train-count 256 --test-count 64 --out runs/study']],
  },
  'examples/README.md#Fine-tuning: MAE vs EMAE at equal pretraining time': {
    needs: 'fashion-mnist',
    why: 'budgets of 0.6 and 1.2 s on 512 images; fine-tuning 1 epoch of 128 images, scored on 64',
    replace: [['--budgets 5,10,20 --out runs/ft-study', '--budgets 0.01,0.02 --train-count 512 --calibrate-steps 2 --out runs/ft-study'],
      ['study-finetune.ts --out runs/ft-study', 'study-finetune.ts --train-count 128 --test-count 64 --epochs 1 --out runs/ft-study']],
  },
};

const blocks = [...shellBlocks('README.md'), ...shellBlocks('examples/README.md')];
const key = (b: Block) => b.key;

// a child process, awaited (a synchronous spawn would stall ava's worker for minutes)
function run(cmd: string, args: string[], cwd: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    // Open MPI refuses root unless told (CI runs as root)
    const child = spawn(cmd, args, { cwd, env: { ...process.env, CI: 'true', OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' } });
    let stdout = '', stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}
// (the plans also point every example's --out into runs/, which moves to the scratch folder: a test
// must never start over in a reader's own runs/ folder)

test('every shell block of the READMEs has a plan, and every plan a block', (t) => {
  t.deepEqual(blocks.map(key).sort(), Object.keys(plans).sort());
});

// one scratch folder for all blocks: later blocks use the runs of earlier ones, as a reader would
const scratch = mkdtempSync(path.join(tmpdir(), 'emae-readme-'));

for (const block of blocks) {
  const plan = plans[key(block)];
  if (!plan) continue;
  const title = `${key(block)} runs as documented: ${block.text.split('\n')[0].slice(0, 60)}`;
  if ('skip' in plan) {
    test.skip(`${title} (${plan.skip})`, () => {});
    continue;
  }
  const missing = plan.needs === 'mpirun' && !hasMpirun ? 'no mpirun on PATH (apt-get install openmpi-bin libopenmpi-dev)'
    : plan.needs === 'fashion-mnist' && !hasFashionMnist ? `Fashion-MNIST is not at ${FASHION_MNIST} (apt-get install dataset-fashion-mnist)`
    : undefined;
  if (missing) {
    console.log(`readme.test: ${key(block)} skipped: ${missing}`);
    test.skip(`${title} (skipped: ${missing})`, () => {});
    continue;
  }
  test.serial(title, async (t) => {
    let script = block.text;
    for (const [from, to] of plan.replace ?? []) {
      t.true(script.includes(from), `${key(block)}: the plan replaces '${from}', which the block no longer contains`);
      script = script.split(from).join(to);
    }
    // run folders go to the scratch folder (the README's relative `runs/…`)
    script = script.replace(/(^|[\s=,:])runs\//gm, `$1${scratch}/runs/`);
    t.log(plan.why ?? '');
    const r = await run('bash', ['-euo', 'pipefail', '-c', script], root);
    t.is(r.status, 0, `${key(block)} failed:\n${script}\n--- stdout\n${r.stdout.slice(-3000)}\n--- stderr\n${r.stderr.slice(-3000)}`);
  });
}

test.serial('the README\'s TypeScript example runs, importing the package by name', async (t) => {
  const text = readFileSync(path.join(root, 'README.md'), 'utf8');
  const example = /## Example\n[\s\S]*?```ts\n([\s\S]*?)^```$/m.exec(text);
  t.truthy(example, 'README.md has an ## Example section with a ts block');
  // a project folder whose node_modules/emae is this package (its built dist), as after `npm install emae`
  const project = path.join(scratch, 'project');
  mkdirSync(path.join(project, 'node_modules'), { recursive: true });
  symlinkSync(root, path.join(project, 'node_modules', 'emae'), 'dir');
  writeFileSync(path.join(project, 'package.json'), JSON.stringify({ type: 'module' }));
  // the example is plain JavaScript too, so it runs as an ES module with no TypeScript loader
  writeFileSync(path.join(project, 'example.mjs'), example![1]);
  const r = await run(process.execPath, ['example.mjs'], project);
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /^9 \d+\.\d{4}/m, 'printed the 10th step');
  t.true(existsSync(path.join(project, 'emae-tiny.safetensors')));
});

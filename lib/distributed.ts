// Data parallelism on an existing engine (DESIGN §6): MPI (Open MPI, MPICH, Slurm's PMI) starts
// the ranks and does the CPU collectives, NCCL all-reduces the gradients of CUDA models — the
// layering Horovod uses. Launch N processes the usual way (`mpirun -np N …`, `srun -n N …`);
// each calls initDistributed() before creating its model, learns its rank, world size and local
// rank from MPI, and uses CUDA device = local rank.
//
// A process that no launcher started (or a launcher with one rank) needs no MPI at all: its
// Distributed has worldSize 1, collectives 'none', and every collective is the identity.
//
// Native side: native/distributed/ (dist.h for the thread rule and the choice of collectives).
import { assertKnownKeys, assertObject, assertPositiveInteger, invalidRangeError, invalidTypeError, isFloat32Array } from './errors.js';
import { EMAE, withNativeHandle } from './model.js';
import { native, type NativeAddon, type NativeModel } from './native.js';

/** 'auto': NCCL for CUDA models when every rank can load it and has a GPU of its own, else MPI; 'mpi': never NCCL (CUDA gradients go through the host); 'nccl': NCCL or an error. */
export type Collectives = 'auto' | 'mpi' | 'nccl';
export type ReduceOp = 'sum' | 'mean' | 'max' | 'min';

export interface DistributedOptions {
  /** how gradients of CUDA models are all-reduced (default 'auto'); CPU models always use MPI */
  collectives?: Collectives;
  /** the world size this program expects; a different one from the launcher is an error (default: the launcher's) */
  worldSize?: number;
  /** host-staged all-reduce bucket in MiB (default 64) */
  bucketMiB?: number;
}

/** What the launcher's environment says about this process, before MPI starts. */
export interface LauncherEnvironment {
  launcher: 'open-mpi' | 'mpich' | 'mvapich' | 'slurm';
  worldSize: number;
  rank: number;
  localRank: number;
}

interface NativeDistStatus {
  initialized: boolean;
  rank: number;
  size: number;
  localRank: number;
  localSize: number;
  cudaDevice: number;
  collectives: 'none' | 'mpi' | 'nccl';
  mpiLibrary: string;
  ncclVersion: string;
  ncclUnavailable: string;
  threadLevel: number;
  /** MPI and NCCL collective calls this process has made (none in a job of one rank) */
  collectiveCalls: number;
}

/** The addon's distributed entry points (native/distributed/dist_wrap.cc). */
interface DistAddon extends NativeAddon {
  distBuildInfo(): { mpi: boolean; mpiPlugin: string; ncclLoader: boolean };
  distStatus(): NativeDistStatus;
  distInit(options: { collectives: Collectives; single?: boolean }): Promise<NativeDistStatus>;
  distAllReduce<T extends Float32Array | Float64Array>(data: T, op: 'sum' | 'max' | 'min'): Promise<T>;
  distAllReduceGrads(model: NativeModel, options: { average: boolean; bucketFloats: number }): Promise<void>;
  distBarrier(): Promise<void>;
  distFinalize(): Promise<void>;
  distAbort(code: number): never;
}

const addon = (): DistAddon => native() as DistAddon;

const INSTALL_MPI = 'install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev) and rebuild emae (npm rebuild emae)';

const intFrom = (env: NodeJS.ProcessEnv, name: string): number | undefined => {
  const v = env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  return Number.isInteger(n) && n >= 0 ? n : undefined;
};

/**
 * Rank, world size and local rank as the launcher put them in the environment (Open MPI's
 * mpirun, MPICH/Intel MPI's Hydra, MVAPICH, Slurm's srun), or undefined when no launcher started
 * this process.
 */
export function launcherEnvironment(env: NodeJS.ProcessEnv = process.env): LauncherEnvironment | undefined {
  const sources: Array<[LauncherEnvironment['launcher'], string, string, string[]]> = [
    ['open-mpi', 'OMPI_COMM_WORLD_SIZE', 'OMPI_COMM_WORLD_RANK', ['OMPI_COMM_WORLD_LOCAL_RANK']],
    ['mpich', 'PMI_SIZE', 'PMI_RANK', ['MPI_LOCALRANKID', 'PMI_LOCAL_RANK']],
    ['mvapich', 'MV2_COMM_WORLD_SIZE', 'MV2_COMM_WORLD_RANK', ['MV2_COMM_WORLD_LOCAL_RANK']],
    ['slurm', 'SLURM_STEP_NUM_TASKS', 'SLURM_PROCID', ['SLURM_LOCALID']],
  ];
  for (const [launcher, sizeVar, rankVar, localVars] of sources) {
    const worldSize = intFrom(env, sizeVar), rank = intFrom(env, rankVar);
    if (worldSize === undefined || worldSize < 1 || rank === undefined || rank >= worldSize) continue;
    const localRank = localVars.map((v) => intFrom(env, v)).find((v) => v !== undefined) ?? 0;
    return { launcher, worldSize, rank, localRank };
  }
  return undefined;
}

/**
 * Thrown on every rank at the same point, so the job can end without MPI_Abort: a non-finite
 * all-reduced loss (the same error everywhere), or one rank's failure in Trainer.run() — that rank
 * throws its own error, the others one with code EMAE_RANK_FAILED, all with `failedRanks`.
 */
export function isCollectiveError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { collective?: unknown }).collective === true;
}

/** Error code of a rank that stopped because another rank failed. */
export const RANK_FAILED = 'EMAE_RANK_FAILED';

/**
 * This rank's own failure, once every rank has learned of it in a collective: the same error
 * (a new one if it cannot carry more), its message prefixed `rank r of N: `, with `collective`
 * and the ranks that failed.
 */
export function ownFailure(err: unknown, where: { rank: number; worldSize: number }, failedRanks: number[]): Error {
  const e = err instanceof Error && Object.isExtensible(err) ? err : new Error(err instanceof Error ? err.message : String(err), { cause: err });
  e.message = `rank ${where.rank} of ${where.worldSize}: ${e.message}`;
  return Object.assign(e, { collective: true, failedRanks });
}

/**
 * Another rank's failure as this rank reports it: `what` names the ranks and what they did
 * ("rank 1 failed at step 3"); code EMAE_RANK_FAILED, `collective` and the ranks that failed.
 */
export function peerFailure(what: string, where: { rank: number; worldSize: number }, failedRanks: number[]): Error {
  return Object.assign(new Error(`${what} (see ${failedRanks.length > 1 ? 'their errors' : 'its error'}); rank ${where.rank} of ${where.worldSize} stopped too`),
    { code: RANK_FAILED, collective: true, failedRanks });
}

/** This process's place in a data-parallel job, and the collectives over its ranks. */
export class Distributed {
  /** 0-based rank in the job */
  readonly rank: number;
  readonly worldSize: number;
  /** rank among the ranks on this machine */
  readonly localRank: number;
  readonly localSize: number;
  /** the CUDA device models of this rank use (local rank, modulo this machine's GPUs) */
  readonly cudaDevice: number;
  /** 'none' for one rank; 'nccl' means CUDA models' gradients go over NCCL (CPU ones still over MPI) */
  readonly collectives: 'none' | 'mpi' | 'nccl';
  /** the MPI library's version line ('' for one rank) */
  readonly mpiLibrary: string;
  /** NCCL's version when collectives is 'nccl' */
  readonly ncclVersion?: string;
  /** why NCCL is not used, when a multi-rank job does not use it */
  readonly ncclUnavailable?: string;
  readonly #bucketFloats: number;
  #finalized = false;
  /** settles when every collective so far has: they must reach MPI in the same order on every rank */
  #tail: Promise<unknown> = Promise.resolve();

  /** Use {@link initDistributed}. */
  constructor(token: symbol, nativeStatus: unknown, bucketFloats: number) {
    if (token !== constructToken) throw new TypeError('Use initDistributed() to join a distributed job');
    const status = nativeStatus as NativeDistStatus;
    this.rank = status.rank;
    this.worldSize = status.size;
    this.localRank = status.localRank;
    this.localSize = status.localSize;
    this.cudaDevice = status.cudaDevice;
    // one rank: 'none', except the one-process NCCL check (initDistributed({ collectives: 'nccl' }))
    this.collectives = status.size > 1 || status.collectives === 'nccl' ? status.collectives : 'none';
    this.mpiLibrary = status.mpiLibrary;
    if (status.ncclVersion) this.ncclVersion = status.ncclVersion;
    if (status.size > 1 && status.ncclUnavailable) this.ncclUnavailable = status.ncclUnavailable;
    this.#bucketFloats = bucketFloats;
  }

  /** rank 0: the rank that prints, logs and writes checkpoints */
  get isMain(): boolean {
    return this.rank === 0;
  }

  /**
   * Element-wise reduction of `data` over every rank; resolves with a new array (the input is
   * not changed). 'mean' is the sum divided by the world size. Every rank must call it, in the
   * same order, with the same length.
   * @throws {TypeError} data not a Float32Array or Float64Array
   * @throws {RangeError} an unknown op
   */
  async allReduce<T extends Float32Array | Float64Array>(data: T, op: ReduceOp = 'sum'): Promise<T> {
    if (!isFloat32Array(data) && !(data instanceof Float64Array)) throw invalidTypeError('data', 'Float32Array or Float64Array', data);
    if (!['sum', 'mean', 'max', 'min'].includes(op)) throw invalidRangeError('op', "'sum', 'mean', 'max' or 'min'", op);
    this.#assertActive();
    if (this.worldSize === 1) return data.slice() as T;
    const copy = data.slice() as T;  // the caller may change `data` while the call waits its turn
    const out = await this.#serial(() => addon().distAllReduce(copy, op === 'mean' ? 'sum' : op));
    if (op === 'mean') for (let i = 0; i < out.length; i++) out[i] /= this.worldSize;
    return out;
  }

  /**
   * Sums the model's accumulated gradients over every rank in place (native memory, no copy to
   * JS; NCCL or MPI as `collectives` says), then divides by the world size unless `average` is
   * false. Call between accumulateGradients() and applyGradients(); with `average: false` pass
   * gradScale 1 / (micro-batches · worldSize) to applyGradients instead (one pass fewer).
   */
  async allReduceGradients(model: EMAE, options: { average?: boolean } = {}): Promise<void> {
    if (!(model instanceof EMAE)) throw invalidTypeError('model', 'an EMAE model', model);
    assertObject('options', options, 'object with average');
    assertKnownKeys('allReduceGradients option', options, ['average']);
    const average = options.average ?? true;
    if (typeof average !== 'boolean') throw invalidTypeError('average', 'boolean', average);
    this.#assertActive();
    if (this.worldSize === 1 && this.collectives !== 'nccl') return;
    await this.#serial(() => withNativeHandle(model, (handle) => addon().distAllReduceGrads(handle, { average, bucketFloats: this.#bucketFloats })));
  }

  /** Resolves when every rank has called it. */
  async barrier(): Promise<void> {
    this.#assertActive();
    if (this.worldSize > 1) await this.#serial(() => addon().distBarrier());
  }

  /** Ends MPI (every rank calls it once, after its last collective). Later collectives throw. */
  async finalize(): Promise<void> {
    if (this.#finalized) return;
    this.#finalized = true;
    if (this.worldSize > 1 || this.collectives === 'nccl') await this.#serial(() => addon().distFinalize());
  }

  /**
   * Ends the whole job because this rank failed: prints `emae: rank r of N: message` to stderr,
   * then MPI_Abort (the launcher stops every rank within seconds). With one rank: exits.
   */
  abort(message: string, code = 1): never {
    process.stderr.write(`emae: rank ${this.rank} of ${this.worldSize}: ${message}\n`);
    if (this.worldSize > 1 && !this.#finalized) addon().distAbort(code);
    process.exit(code);
  }

  // Runs collectives one at a time in call order (the native queue alone does not keep the order
  // of calls that wait at the same time).
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(fn);
    this.#tail = run.catch(() => undefined);
    return run;
  }

  #assertActive(): void {
    if (this.#finalized) throw new Error('the distributed job has been finalized');
  }
}

const constructToken = Symbol('initDistributed');
let current: { dist: Distributed; collectives: Collectives } | undefined;

/** The job joined by initDistributed(), if any. */
export function currentDistributed(): Distributed | undefined {
  return current?.dist;
}

/**
 * Joins the data-parallel job this process was launched into (or makes a one-rank job when no
 * launcher started it). Call it once, before creating models: CUDA models then go to this rank's
 * device. A second call returns the same job.
 * @throws {TypeError|RangeError} bad options (named)
 * @throws {Error} more than one rank without MPI in this build (says what to install); a
 *   `worldSize` the launcher does not match; collectives 'nccl' where NCCL is not usable
 */
export async function initDistributed(options: DistributedOptions = {}): Promise<Distributed> {
  assertObject('options', options, 'object with collectives, worldSize, bucketMiB');
  assertKnownKeys('initDistributed option', options, ['collectives', 'worldSize', 'bucketMiB']);
  const given: unknown = (options as DistributedOptions).collectives ?? 'auto';
  if (typeof given !== 'string') throw invalidTypeError('collectives', "'auto', 'mpi' or 'nccl'", given);
  if (!['auto', 'mpi', 'nccl'].includes(given)) throw invalidRangeError('collectives', "'auto', 'mpi' or 'nccl'", given);
  const collectives = given as Collectives;
  if (options.worldSize !== undefined) assertPositiveInteger('worldSize', options.worldSize);
  const bucketMiB = options.bucketMiB ?? 64;
  if (typeof bucketMiB !== 'number') throw invalidTypeError('bucketMiB', 'number of MiB in 1..2048', bucketMiB);
  if (!(bucketMiB >= 1 && bucketMiB <= 2048)) throw invalidRangeError('bucketMiB', 'number of MiB in 1..2048', bucketMiB);
  const launched = launcherEnvironment();
  const worldSize = current?.dist.worldSize ?? launched?.worldSize ?? 1;
  if (options.worldSize !== undefined && options.worldSize !== worldSize) {
    throw new Error(launched
      ? `initDistributed: worldSize ${options.worldSize} was asked for, but the launcher (${launched.launcher}) started ${worldSize} rank(s)`
      : `initDistributed: worldSize ${options.worldSize} was asked for, but no MPI launcher started this process ` +
        `(no OMPI_COMM_WORLD_SIZE, PMI_SIZE or SLURM_STEP_NUM_TASKS in its environment): start it with ` +
        `\`mpirun -np ${options.worldSize} …\` or \`srun -n ${options.worldSize} …\`` +
        (addon().distBuildInfo().mpi ? '' : `; this build of emae also has no MPI support: ${INSTALL_MPI}`));
  }
  if (current) {
    if (current.collectives !== collectives)
      throw new Error(`initDistributed: this process already joined its job with collectives '${current.collectives}'`);
    return current.dist;
  }
  const bucketFloats = Math.floor((bucketMiB * 2 ** 20) / 4);
  let status: NativeDistStatus;
  if (worldSize === 1 && collectives === 'nccl') {
    // one process asking for NCCL: a one-rank communicator, no MPI (checks NCCL on one GPU through
    // the whole data-parallel step); an error says why where NCCL or a GPU is missing
    status = await addon().distInit({ collectives, single: true });  // its errors name initDistributed
  } else if (worldSize === 1) {
    // one rank: no MPI at all
    status = { initialized: false, rank: 0, size: 1, localRank: 0, localSize: 1, cudaDevice: 0, collectives: 'none',
      mpiLibrary: '', ncclVersion: '', ncclUnavailable: '', threadLevel: 0, collectiveCalls: 0 };
  } else {
    const a = addon();
    const build = a.distBuildInfo();
    if (!build.mpi && !process.env.EMAE_MPI_PLUGIN) {
      throw new Error(`initDistributed: this process is rank ${launched!.rank} of ${worldSize} (${launched!.launcher}), ` +
        `but this build of emae has no MPI support (CMake found no MPI when it was built): ${INSTALL_MPI}`);
    }
    try {
      status = await a.distInit({ collectives });
    } catch (err) {
      if (err instanceof Error) err.message = `rank ${launched!.rank} of ${worldSize}: ${err.message}`;
      throw err;
    }
    if (status.size !== worldSize || status.rank !== launched!.rank) {
      // each process would otherwise train alone as rank 0 of 1, all writing to one --out folder
      await a.distFinalize();
      throw new Error(`initDistributed: the launcher (${launched!.launcher}) started this process as rank ${launched!.rank} ` +
        `of ${worldSize}, but MPI (${status.mpiLibrary || 'the library emae loaded'}) sees rank ${status.rank} of ${status.size}: ` +
        `the launcher belongs to another MPI installation than the one emae was built with, or srun gave MPI no PMI ` +
        `(try \`srun --mpi=pmix\`); start it with that MPI's own mpirun`);
    }
  }
  const dist = new Distributed(constructToken, status, bucketFloats);
  current = { dist, collectives };
  return dist;
}

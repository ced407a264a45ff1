// The typed surface of the raw native addon and its loader. Everything here is internal: the
// public API (lib/model.ts) validates arguments before calling in, and the C++ side re-checks
// cheaply. One options object per call, copied into a plain C++ struct.
// The addon file is found as node-gyp-build finds it: a source build (build/Release, build/Debug)
// first, so that `--build-from-source` takes effect, then the prebuilt binary the package ships
// (prebuilds/linux-x64/emae.napi.glibc.node); EMAE_NATIVE_PATH overrides both.
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';

/** Model configuration as the native core takes it (already validated and resolved in TS). */
export interface NativeModelConfig {
  imageSize: number;
  patchSize: number;
  channels: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  decoderEmbedDim: number;
  decoderDepth: number;
  decoderNumHeads: number;
  mlpRatio: number;
  /** K: parts used per iteration (1 = plain MAE). */
  parts: number;
  /** K_total = round(1 / (1 - maskRatio)). */
  partsTotal: number;
  normPixLoss: boolean;
  consistencyDistance: 'mse' | 'l1';
  layerNormEps: number;
  /** Seed of the parameter initialization (uint32). */
  seed: number;
  /** OpenMP threads for the CPU backend (>= 1). */
  threads: number;
  /** backend: 'cuda' uses CUDA device 0 */
  device: 'cpu' | 'cuda';
  /** the CPU backend's GEMMs in bf16 (AMX tiles, else AVX512-BF16) or fp32 */
  cpuMatmul: 'fp32' | 'bf16';
}

export interface NativeParamInfo {
  name: string;
  shape: number[];
  /** false for the frozen sin-cos positional embeddings */
  trainable: boolean;
  /** AdamW weight decay applies (ndim >= 2 and not a bias) */
  decay: boolean;
}

export interface NativeBatch {
  images: Float32Array;      // [B, C, H, W]
  permutation: Int32Array;   // [B, N], each row a permutation of 0..N-1
  batchSize: number;
  consistencyWeight: number; // lambda for this step
}

export interface NativeOptimOptions {
  lr: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** clip gradients to this global L2 norm; 0 = no clipping */
  clipGrad: number;
}

export interface NativeLosses {
  loss: number;
  recon: number;
  consistency: number;
}

export interface NativeStepResult extends NativeLosses {
  /** global L2 norm of the gradients before clipping */
  gradNorm: number;
  /** optimizer step count after this step */
  step: number;
}

export interface NativeOptimizerState {
  step: number;
  /** per trainable parameter, AdamW first and second moments */
  expAvg: Record<string, Float32Array>;
  expAvgSq: Record<string, Float32Array>;
}

/** The EMAE_PROFILE report of a model's backend (native/wrap_common.h profile_object). */
export interface NativeProfile {
  timing: 'host-clock' | 'cuda-events';
  steps: number;
  stepMs: number;
  opsMs: number;
  /** by totalMs, largest first; shape '' for ops recorded by name only */
  rows: Array<{ op: string; shape: string; calls: number; totalMs: number }>;
}

export interface NativeModel {
  paramInfo(): NativeParamInfo[];
  /** Copies of every parameter (state-dict names). */
  getParams(): Record<string, Float32Array>;
  /** Replaces every parameter; all names and sizes are checked before anything is written. */
  setParams(params: Record<string, Float32Array>): void;
  getOptimizerState(): NativeOptimizerState;
  setOptimizerState(state: NativeOptimizerState): void;
  /** Forward + backward; gradients of the trainable parameters. Inputs are copied before the promise is created. */
  lossAndGrads(batch: NativeBatch): Promise<NativeLosses & { grads: Record<string, Float32Array> }>;
  /** Forward + backward + AdamW. A non-finite loss rejects and leaves parameters and optimizer untouched. */
  trainStep(batch: NativeBatch, optim: NativeOptimOptions): Promise<NativeStepResult>;
  /** Forward + backward of a micro-batch, adding to the accumulated gradients (reset: start afresh). */
  accumulateGrads(batch: NativeBatch, options: { reset: boolean }): Promise<NativeLosses>;
  /** Scales the accumulated gradients by gradScale, clips, AdamW. */
  applyGrads(optim: NativeOptimOptions & { gradScale: number }): Promise<{ gradNorm: number; step: number }>;
  /** Forward only: predictions (B·K, 1+N, P) (row 0 of each part is the cls row) and the losses. */
  predict(batch: NativeBatch): Promise<NativeLosses & { pred: Float32Array }>;
  /** Encoder on the whole, unmasked images: features (B, 1+N, D) after the final norm. */
  encode(input: { images: Float32Array; batchSize: number }): Promise<Float32Array>;
  /** The per-op profile (EMAE_PROFILE=1 at creation), null when not profiled; reset: start again from zero. */
  profile(options: { reset: boolean }): NativeProfile | null;
  /** Bytes a training step at batchSize holds on this model's backend (planned, nothing allocated). */
  memory(batchSize: number): NativeMemory;
  /** the backend's name, e.g. 'cpu (avx512)' */
  readonly backend: string;
  /** the element type the backend stores activations in (EMAE_ACTIVATIONS at creation) */
  readonly activations: 'fp32' | 'bf16';
  /** Frees native memory; every later call throws. */
  dispose(): void;
  readonly disposed: boolean;
}

/** Bytes of backend memory (native/core/memory_plan.h); see MemoryReport (lib/memory.ts). */
export interface NativeMemory {
  params: number; grads: number; optimizer: number; weightCopy: number; activations: number; total: number;
}

export interface NativeClassifierConfig {
  imageSize: number; patchSize: number; channels: number; embedDim: number; depth: number; numHeads: number;
  mlpRatio: number; numClasses: number; globalPool: boolean; dropPath: number; layerNormEps: number;
  seed: number; threads: number; device: 'cpu' | 'cuda'; cpuMatmul: 'fp32' | 'bf16';
}

export interface NativeClassifierBatch {
  /** (B, C, H, W) */
  images: Float32Array;
  /** (B, numClasses) soft targets; not for predict */
  targets?: Float32Array;
  /** (depth, 2, B) drop-path factors of each block's attention and MLP branch; absent: no drop path */
  keep?: Float32Array;
  batchSize: number;
}

/** The native fine-tuning model (native/classifier_wrap.cc). */
export interface NativeClassifier {
  paramInfo(): Array<NativeParamInfo & { layer: number }>;
  getParams(): Record<string, Float32Array>;
  setParams(params: Record<string, Float32Array>): void;
  getOptimizerState(): NativeOptimizerState;
  setOptimizerState(state: NativeOptimizerState): void;
  lossAndGrads(batch: NativeClassifierBatch): Promise<{ loss: number; grads: Record<string, Float32Array> }>;
  trainStep(batch: NativeClassifierBatch, optim: NativeOptimOptions & { layerDecay: number }): Promise<{ loss: number; gradNorm: number; step: number }>;
  /** logits (B, numClasses) */
  predict(batch: NativeClassifierBatch): Promise<Float32Array>;
  /** as NativeModel.profile */
  profile(options: { reset: boolean }): NativeProfile | null;
  /** as NativeModel.memory */
  memory(batchSize: number): NativeMemory;
  dispose(): void;
  readonly disposed: boolean;
  readonly backend: string;
  /** as NativeModel.activations */
  readonly activations: 'fp32' | 'bf16';
}

export interface NativeCudaInfo {
  /** the addon was built with the CUDA backend */
  compiled: boolean;
  /** CUDA architectures compiled in, e.g. "80;90" ('' when not compiled) */
  architectures: string;
  /** why no device is usable, when none is */
  error?: string;
  devices: Array<{
    index: number; name: string; computeCapability: string; multiProcessors: number; totalMemory: number; freeMemory: number;
    /** the GEMM kernels a model on this device runs: 'mma' | 'sm80' | 'sm90' (env EMAE_CUDA_GEMM), or 'refused: …' */
    gemmPath: string;
    /** the attention kernels: 'simt' | 'tc' (env EMAE_CUDA_ATTENTION), or 'refused: …' */
    attentionPath: string;
    /** where a training step waits for the GPU: 'host' | 'once' (env EMAE_CUDA_STEP_SYNC), or 'refused: …' */
    stepSync: string;
    /** the element type a model created now stores its activations in: 'fp32' | 'bf16' (env
     * EMAE_ACTIVATIONS), or 'refused: …'; bf16 decides gemmPath under EMAE_CUDA_GEMM=auto */
    activations: string;
  }>;
}

export interface NativeAddon {
  /** Builds a model (allocation, MAE initialization, upload to the device) off the JS thread. */
  createModel(config: NativeModelConfig): Promise<NativeModel>;
  /** Builds a fine-tuning classifier (MAE's models_vit) off the JS thread. */
  createClassifier(config: NativeClassifierConfig): Promise<NativeClassifier>;
  /** NativeModel.memory of a model not created, on a backend storing activations (and GEMM weights) so. */
  modelMemoryPlan(config: NativeModelConfig, batchSize: number, activations: 'fp32' | 'bf16'): NativeMemory;
  /** as modelMemoryPlan, for a classifier */
  classifierMemoryPlan(config: NativeClassifierConfig, batchSize: number, activations: 'fp32' | 'bf16'): NativeMemory;
  cudaInfo(): NativeCudaInfo;
  /** OpenMP threads available by default */
  defaultThreads(): number;
  /** the CPU GEMM micro-kernel in use: 'avx512' | 'avx2' | 'generic' (env EMAE_GEMM_KERNEL narrows it) */
  cpuGemmKernel(): string;
  /**
   * whether the opt-in bf16 CPU matmuls can run in this process, on which kernel ('amx-bf16':
   * Intel AMX tiles; 'avx512-bf16': VDPBF16PS on CPUs without AMX; '' when neither), and if not why
   * (env EMAE_BF16_KERNEL=amx-bf16|avx512-bf16 narrows the choice)
   */
  cpuBf16Available(): { available: boolean; kernel: '' | 'amx-bf16' | 'avx512-bf16'; reason: string };
  /**
   * Runs one Backend op in float32 on the CPU or CUDA backend, for the parity tests (internal,
   * synchronous). Returns the op's outputs (Float32Array) and host values (numbers).
   * dims.bf16 = 1: the backend stores activations in bf16 (CUDA's bf16 storage, the CPU's
   * reference of it); the op's activation arguments (and GEMM weights) are rounded to bf16 in
   * backend memory and its bf16 outputs come back widened; adamw also returns paramBf16.
   * dims.doutF32 = 1 (matmul_backward, matmul_backward_gelu): dout stays fp32, as the core passes
   * the residual stream's gradient and the classifier's dlogits.
   */
  testBackendOp(device: 'cpu' | 'cuda', name: string, tensors: Record<string, Float32Array | Int32Array>,
    dims: Record<string, number>): Record<string, Float32Array | number>;
  /** Runs one CPU op in float64 for the gradient tests (internal, synchronous). */
  testOp(name: string, tensors: Record<string, Float64Array>, dims: Record<string, number>): Record<string, Float64Array>;
}

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
/** the package folder: lib/ (sources) and dist/ (built) both sit one level below it */
const root = path.resolve(here, '..');

/** Which addon file this process loaded. */
export interface NativeBinding {
  /** absolute path of the .node file */
  path: string;
  /** the binary shipped in the package's prebuilds/ folder (else one built from source) */
  prebuilt: boolean;
  /** chosen by EMAE_NATIVE_PATH rather than found in the package */
  fromEnv: boolean;
}

function loadError(problem: string): Error {
  return new Error(
    `emae: could not load the native addon.\n  ${problem.replace(/\n+$/, '').replace(/\n/g, '\n  ')}\n` +
    'Possible solutions:\n' +
    '- On linux-x64 (glibc) the package ships a prebuilt binary in prebuilds/: reinstall emae if that folder is missing.\n' +
    '- Build it from source: `EMAE_BUILD_FROM_SOURCE=1 npm rebuild emae` (npm 11 first wants `npm install-scripts approve emae`),\n' +
    '  or `npm run build:native` in the emae package folder; this needs CMake >= 3.18 and a C++17 compiler with OpenMP,\n' +
    '  and nvcc for the CUDA backend.\n' +
    '- Set EMAE_NATIVE_PATH to a built emae.node.');
}

function loadAddon(): { addon: NativeAddon; binding: NativeBinding } {
  const override = process.env.EMAE_NATIVE_PATH;
  let file: string;
  if (override) {
    // No fallback when the user names a file: loading another one would hide the mistake.
    file = path.resolve(override);
    if (!existsSync(file)) throw loadError(`EMAE_NATIVE_PATH=${override}: not found`);
  } else {
    const nodeGypBuild = require('node-gyp-build') as { resolve(dir: string): string };
    try {
      file = nodeGypBuild.resolve(root);
    } catch (err) {
      throw loadError(`no emae.node in ${root}: neither a source build (build/Release, build/Debug) nor a prebuilt ` +
        `binary for this platform (prebuilds/): ${(err as Error).message.trim().replace(/\s*\n\s*/g, '; ')}`);
    }
  }
  let addon: NativeAddon;
  try {
    addon = require(file) as NativeAddon;
  } catch (err) {
    throw loadError(`${file}: ${(err as Error).message}`);
  }
  return { addon, binding: { path: file, prebuilt: path.basename(path.dirname(path.dirname(file))) === 'prebuilds', fromEnv: !!override } };
}

let cached: { addon: NativeAddon; binding: NativeBinding } | undefined;
/** The native addon, loaded on first use. */
export function native(): NativeAddon {
  cached ??= loadAddon();
  return cached.addon;
}

/** Which addon file is in use (loads it): the prebuilt binary or a source build, and where. */
export function nativeBinding(): NativeBinding {
  cached ??= loadAddon();
  return { ...cached.binding };
}

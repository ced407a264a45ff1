// emae: EMAE (Efficient Masked Autoencoders with Self-Consistency) pretraining from Node.
import { createRequire } from 'node:module';
import { native, type NativeCudaInfo } from './native.js';
export { nativeBinding } from './native.js';
export type { NativeBinding } from './native.js';

export { EMAE } from './model.js';
export type {
  Batch, Device, LoadOptions, LossAndGradsResult, LossOptions, Losses, OptimizerState, ParamInfo,
  StateDictTensor, TrainStepOptions, TrainStepResult,
} from './model.js';
export type { ActivationType, MemoryPlanOptions, MemoryReport } from './memory.js';
export { formatProfile, profileByOp } from './profile.js';
export type { ProfileDisabled, ProfileOptions, ProfileReport, ProfileRow } from './profile.js';
export { ParallelMasker, validatePermutation } from './masker.js';
export type { ParallelMaskerOptions } from './masker.js';
export { presets, presetNames } from './presets.js';
export type { PresetConfig, PresetName } from './presets.js';
export { resolveConfig, configKeys } from './config.js';
export type { ConsistencyDistance, CpuMatmul, DeviceRequest, EMAEConfig, ResolvedConfig } from './config.js';
export { readSafetensors, writeSafetensors, writeFileAtomic } from './safetensors.js';
export type { SafetensorsDType, SafetensorsData, SafetensorsFile, SafetensorsInput, SafetensorsTensor } from './safetensors.js';

export type CudaInfo = NativeCudaInfo;

/**
 * What the native addon knows about CUDA: whether the CUDA backend was compiled in, for which
 * architectures, the devices it sees, or why none is usable. Loads the addon.
 */
export function cudaInfo(): CudaInfo {
  const info = native().cudaInfo();
  return { ...info, devices: info.devices.map((d) => ({ ...d })) };
}

export interface CpuInfo {
  /** CPU threads a model uses when its config sets none (OpenMP's default, OMP_NUM_THREADS) */
  defaultThreads: number;
  /** the fp32 GEMM micro-kernel picked for this CPU: 'avx512' | 'avx2' | 'generic' */
  gemmKernel: string;
  /** whether cpuMatmul 'bf16' can run in this process */
  bf16Available: boolean;
  /** the kernel it runs on: 'amx-bf16' (Intel AMX tiles), 'avx512-bf16' (AVX512-BF16 without AMX: AMD Zen 4 and newer), '' when unavailable */
  bf16Kernel: string;
  /** why not, when bf16Available is false ('' otherwise) */
  bf16Reason: string;
}

/** What the native addon knows about the CPU backend on this machine. Loads the addon. */
export function cpuInfo(): CpuInfo {
  const addon = native();
  const bf16 = addon.cpuBf16Available();
  return { defaultThreads: addon.defaultThreads(), gemmKernel: addon.cpuGemmKernel(), bf16Available: bf16.available, bf16Kernel: bf16.kernel, bf16Reason: bf16.reason };
}

/** The package version (package.json; lib/ and dist/ both sit one level below it). */
export const version: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version;
export { Classifier, resolveClassifierConfig } from './classifier.js';
export type { ClassifierBatch, ClassifierConfig, ClassifierParamInfo, FinetuneStepOptions, ResolvedClassifierConfig } from './classifier.js';
export { Trainer } from './trainer.js';
export { Distributed, currentDistributed, initDistributed, isCollectiveError, launcherEnvironment } from './distributed.js';
export type { Collectives, DistributedOptions, LauncherEnvironment, ReduceOp } from './distributed.js';
export type { BatchSource, ImageSet, StepInfo, TrainerOptions } from './trainer.js';
export { ImageFolder, centerCropGeometry, randomResizedCropBox } from './folder.js';
export type { FolderCrop, FolderTransform, ImageFolderOptions, LoadedBatch, UnreadableImage } from './folder.js';
export { loadCifar10, loadIdx, parseIdx, syntheticShapes } from './data.js';
export type { LabelledImageSet, Normalization } from './data.js';
export { Mixup, augmentBatch, randAugment, randomErasing, smoothOneHot } from './finetune-data.js';
export type {
  AppliedOp, AugmentOptions, MixBox, MixupOptions, MixupResult, RandAugmentResult, RandomErasingOptions, RandomErasingResult,
} from './finetune-data.js';
export { RAND_INCREASING_TRANSFORMS, RAND_TRANSFORMS, applyRandAugmentOp, parseRandAugmentConfig, randAugmentArgument } from './rand-augment.js';
export type { RandAugmentOp, RandAugmentOptions } from './rand-augment.js';
export { saveCheckpoint, loadCheckpoint, listCheckpoints, pruneCheckpoints } from './checkpoint.js';
export { readWeightsInfo } from './weights-file.js';
export type { WeightsFileInfo } from './weights-file.js';
export { lrAt, scaledLr } from './schedule.js';
export type { LrSchedule } from './schedule.js';
export { consistencyMeasure, knnAccuracy, linearProbe } from './evaluate.js';
export type { Features, ProbeOptions } from './evaluate.js';
export { accuracyVsTimeSvg, lossCurvesSvg, readStepLog, resultsSvg, writeChart } from './charts.js';
export type { BudgetPoint, CurvePoint } from './charts.js';
export { FineTuner, top1Accuracy, saveClassifierCheckpoint, loadClassifierCheckpoint } from './finetune.js';
export type { FinetuneData, FinetuneEpochInfo, FinetuneOptions, FinetuneStepInfo } from './finetune.js';

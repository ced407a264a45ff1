// The backend memory a training step holds (native/core/memory_plan.h), as EMAE.memory /
// EMAE.memoryPlan and Classifier.memory / Classifier.memoryPlan report it.
import { assertKnownKeys, assertObject, assertPositiveInteger, invalidParameterError } from './errors.js';

/** The element type a backend stores activations in (env EMAE_ACTIVATIONS at creation). */
export type ActivationType = 'fp32' | 'bf16';

/**
 * Bytes of backend memory a training step at one batch size holds, from the same planner that lays
 * out the activation arena (nothing is allocated to compute it).
 */
export interface MemoryReport {
  /** fp32 master weights */
  params: number;
  /** fp32 gradients */
  grads: number;
  /** AdamW's two fp32 moments */
  optimizer: number;
  /** the bf16 copy of the weights the GEMMs read under bf16 activations; 0 under fp32 */
  weightCopy: number;
  /** the training arena: inputs, saved activations, the losses' inputs and the backward's scratch */
  activations: number;
  /** the sum of the above */
  total: number;
}

export interface MemoryPlanOptions {
  /** the activations' element type to plan for (default 'fp32'); 'bf16' also counts the bf16 weight copy */
  activations?: ActivationType;
}

/** memoryPlan's (batchSize, options) checked; returns the activation type */
export function checkMemoryPlanArgs(batchSize: unknown, options: unknown): ActivationType {
  assertPositiveInteger('batchSize', batchSize);
  assertObject('memoryPlan options', options);
  assertKnownKeys('memoryPlan option', options, ['activations']);
  const activations = options.activations ?? 'fp32';
  if (activations !== 'fp32' && activations !== 'bf16')
    throw invalidParameterError('activations', "'fp32' or 'bf16'", activations, 'string');
  return activations;
}

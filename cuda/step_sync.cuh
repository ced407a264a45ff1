// EMAE_CUDA_STEP_SYNC: where a training step waits for the GPU (issue 12: one host sync per step).
//   host (and auto, or unset): the flow verified on an H100 — the loss ops download their values
//     (and write them into the step status), the optimizer downloads the status, decides on the
//     host (core/step_status.h decide_step) and launches scale_kernel and adamw_kernel; uploads
//     wait for their copy.
//   once: nothing waits inside the step. The losses are finished on the device
//     (loss_values_kernel, mean_of_total_kernel), the optimizer decides there (step_decision_kernel,
//     adamw_decided_kernel), a step's inputs are staged in pinned memory (CudaBackend::upload_input),
//     and the status download at the end of the step (core/optimizer_step.cc) is the one host sync.
// Anything else is refused when a backend is created. auto stays host until a GPU run verifies once.
#pragma once
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "cuda/env_switch.h"

namespace emae::cuda {

enum class StepSync { kHost, kOnce };

inline const char* step_sync_name(StepSync s) { return s == StepSync::kOnce ? "once" : "host"; }

inline StepSync select_step_sync() {
  return env_switch("EMAE_CUDA_STEP_SYNC", {"auto", "host", "once"}) == "once" ? StepSync::kOnce : StepSync::kHost;
}

}  // namespace emae::cuda

// The CUDA clock of the profiling decorator (core/profiling_backend.h): a pair of CUDA events
// recorded on the backend's stream around each op and each step window, read when a report is
// asked for (or, without waiting, at the next step for the windows the device has finished), so
// profiling adds two event records per op and no synchronization. Declared for every build;
// defined only with the CUDA backend, else it throws.
#pragma once
#include <memory>
#include <stdexcept>

#include "core/profiling_backend.h"
#include "cuda/cuda_backend.h"

namespace emae::cuda {

// A clock for the ops of the backend at `where` (placement_of; device >= 0).
#if EMAE_WITH_CUDA && EMAE_CUDA_BACKEND
std::unique_ptr<OpClock> make_event_clock(const CudaPlacement& where);
#else
inline std::unique_ptr<OpClock> make_event_clock(const CudaPlacement&) {
  throw std::runtime_error("emae was built without the CUDA backend: no CUDA event clock");
}
#endif

}  // namespace emae::cuda

// The CUDA backend: the Backend interface on one GPU, one stream. Declared for every build;
// defined only when the addon is built with CUDA (EMAE_WITH_CUDA), else it throws.
#pragma once
#include <memory>
#include <stdexcept>

#include "core/backend.h"

namespace emae::cuda {

// Where a backend computes, for the data-parallel all-reduce (native/distributed): the CUDA device and
// stream (a cudaStream_t) of a CUDA backend, also one wrapped by the profiling decorator
// (core/profiling_backend.h); device -1 for any other backend.
struct CudaPlacement {
  int device = -1;
  void* stream = nullptr;
};

// Throws emae::RangeError / std::runtime_error when the device is missing or unusable.
#if EMAE_WITH_CUDA && EMAE_CUDA_BACKEND
std::unique_ptr<Backend> make_cuda_backend(int device);
CudaPlacement placement_of(Backend& backend);
#else
inline CudaPlacement placement_of(Backend&) { return {}; }
inline std::unique_ptr<Backend> make_cuda_backend(int) {
  throw std::runtime_error("emae was built without the CUDA backend (EMAE_CUDA=OFF or no CUDA compiler found)");
}
#endif

}  // namespace emae::cuda

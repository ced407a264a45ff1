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
// activations: the element type the backend stores activations in (Backend::activation_dtype);
// bf16 also keeps a bf16 copy of the weights for the GEMMs (Backend::weight_dtype) and needs a
// bf16 GEMM path (EMAE_CUDA_GEMM sm80 or sm90; refused with a sentence on mma).
#if EMAE_WITH_CUDA && EMAE_CUDA_BACKEND
std::unique_ptr<Backend> make_cuda_backend(int device, DType activations = DType::kF32);
CudaPlacement placement_of(Backend& backend);
#else
inline CudaPlacement placement_of(Backend&) { return {}; }
inline std::unique_ptr<Backend> make_cuda_backend(int, DType = DType::kF32) {
  throw std::runtime_error("emae was built without the CUDA backend (EMAE_CUDA=OFF or no CUDA compiler found)");
}
#endif

}  // namespace emae::cuda

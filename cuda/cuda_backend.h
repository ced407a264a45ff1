// The CUDA backend: the Backend interface on one GPU, one stream. Declared for every build;
// defined only when the addon is built with CUDA (EMAE_WITH_CUDA), else it throws.
#pragma once
#include <memory>
#include <stdexcept>

#include "core/backend.h"

namespace emae::cuda {

// Throws emae::RangeError / std::runtime_error when the device is missing or unusable.
#if EMAE_WITH_CUDA && EMAE_CUDA_BACKEND
std::unique_ptr<Backend> make_cuda_backend(int device);
#else
inline std::unique_ptr<Backend> make_cuda_backend(int) {
  throw std::runtime_error("emae was built without the CUDA backend (EMAE_CUDA=OFF or no CUDA compiler found)");
}
#endif

}  // namespace emae::cuda

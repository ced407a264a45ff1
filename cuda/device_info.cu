// Reports the CUDA devices the runtime sees. The first CUDA code of the build, so the CUDA
// toolchain path (nvcc, architectures, static cudart) is exercised from day one.
#include <cuda_runtime.h>

#include "cuda/device_info.h"

namespace emae::cuda {

DeviceReport query_devices(DType activations) {
  DeviceReport r;
  r.compiled = true;
  r.architectures = EMAE_CUDA_ARCHS;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    r.error = std::string("cudaGetDeviceCount: ") + cudaGetErrorName(err) + ": " + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return r;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    err = cudaGetDeviceProperties(&prop, i);
    if (err != cudaSuccess) {
      r.error = "cudaGetDeviceProperties(" + std::to_string(i) + "): " + cudaGetErrorString(err);
      cudaGetLastError();
      continue;
    }
    DeviceInfo d;
    d.index = i;
    d.name = prop.name;
    d.major = prop.major;
    d.minor = prop.minor;
    d.multi_processors = prop.multiProcessorCount;
    d.total_memory = prop.totalGlobalMem;
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess) {
      d.free_memory = free_bytes;
    } else {
      cudaGetLastError();
    }
    d.gemm_path = gemm_path_of_device(i, activations);
    d.attention_path = attention_path_setting();
    d.step_sync = step_sync_setting();
    r.devices.push_back(d);
  }
  if (count == 0) r.error = "no CUDA device found";
  return r;
}

}  // namespace emae::cuda

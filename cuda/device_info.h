// CUDA device discovery. Compiled by nvcc when the CUDA backend is built; otherwise the stub in
// this header reports that CUDA was not compiled in. Never throws: errors are reported.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

#include "core/act.h"  // DType

namespace emae::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;
  int multi_processors = 0;
  size_t total_memory = 0;
  size_t free_memory = 0;  // at the time of the query
  std::string gemm_path;       // the GEMM kernels a model on this device runs (EMAE_CUDA_GEMM), or why not
  std::string attention_path;  // the attention kernels (EMAE_CUDA_ATTENTION), or why not
  std::string step_sync;       // where a step waits for the GPU (EMAE_CUDA_STEP_SYNC), or why not
};

struct DeviceReport {
  bool compiled = false;       // built with the CUDA backend
  std::string architectures;   // e.g. "80;90"
  std::string error;           // why no device is usable ('' when fine)
  std::vector<DeviceInfo> devices;
};

#if EMAE_WITH_CUDA
// activations: what a model created now would store its activations in (EMAE_ACTIVATIONS, read by
// the caller); it decides the GEMM path under EMAE_CUDA_GEMM=auto.
DeviceReport query_devices(DType activations = DType::kF32);
// "mma", "sm80" or "sm90" (cuda/gemm_dispatch.cuh) for device and activations, or "refused: <why>";
// sets the device.
std::string gemm_path_of_device(int device, DType activations);
// "simt" or "tc" (cuda/attention_tc.cuh), or "refused: <why>".
std::string attention_path_setting();
// "host" or "once" (cuda/step_sync.cuh), or "refused: <why>".
std::string step_sync_setting();
#else
inline DeviceReport query_devices(DType = DType::kF32) {
  DeviceReport r;
  r.error = "emae was built without the CUDA backend (EMAE_CUDA=OFF or no CUDA compiler found)";
  return r;
}
#endif

}  // namespace emae::cuda

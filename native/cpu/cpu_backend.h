// The CPU backend: fp32, OpenMP threads, the ops of ops.h and the packed GEMM of gemm.h.
#pragma once
#include <memory>

#include "core/backend.h"

namespace emae::cpu {

// bf16_matmul: the GEMMs in bf16 on AMX tiles or AVX512-BF16 (throws std::runtime_error where neither runs)
std::unique_ptr<Backend> make_cpu_backend(bool bf16_matmul = false);

}  // namespace emae::cpu

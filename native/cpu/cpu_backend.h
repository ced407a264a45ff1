// The CPU backend: fp32, OpenMP threads, the ops of ops.h and the packed GEMM of gemm.h.
#pragma once
#include <memory>

#include "core/backend.h"

namespace emae::cpu {

std::unique_ptr<Backend> make_cpu_backend();

}  // namespace emae::cpu

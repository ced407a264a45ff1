// The CPU's reference of the GPU's bf16 activation storage (issue 11), for checking the core's
// bf16 plumbing and the CUDA backend without a GPU: a Backend decorator over the CPU backend that
// answers activation_dtype() = weight_dtype() = bf16, so the core plans its narrow buffers in bf16
// and keeps a bf16 weight copy, and runs each op on those views as the device does at its
// storage boundaries: bf16 inputs widened to fp32, the inner fp32 op, bf16 outputs rounded to
// nearest even. fp32 arguments pass straight through. Slow (every narrow tensor is converted on
// every call); selected by EMAE_ACTIVATIONS=bf16 on a CPU model (native/wrap_common.h).
#pragma once
#include <memory>

#include "core/backend.h"

namespace emae::cpu {

// inner: a host-memory backend (the CPU backend), which must itself be fp32
std::unique_ptr<Backend> make_bf16_reference_backend(std::unique_ptr<Backend> inner);

}  // namespace emae::cpu
